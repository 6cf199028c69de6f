"""FedAvg (McMahan et al. 2017) on LoRA: every adapter tensor shared, (weighted) mean at the server.

Adapters by `match` (simfed/learn/matching.py): the paper's two averaged MLP LoRA experts (no
router) plus attention LoRA, or with `match: none` one LoRA on attention and MLP."""
from __future__ import annotations

import torch

from simfed.learn.adapters import AdaptedModel
from simfed.learn.methods.adapter_method import AdapterMethod
from simfed.learn.methods.base import MergesAsync, Update
from simfed.learn.spec import FedAvgSpec, TrainingSpec


class FedAvg(AdapterMethod, MergesAsync):
    spec_type = FedAvgSpec

    def __init__(self, spec: FedAvgSpec, training: TrainingSpec, model: AdaptedModel) -> None:
        super().__init__(spec, training, model, shared=lambda name: True)

    def aggregate_async(self, updates: list[Update], bases: list[dict[str, torch.Tensor]], weights: list[float],
                        round_index: int) -> None:
        self.buffered_mean(updates, bases, weights)
