"""FedAvg (McMahan et al. 2017) on LoRA: one LoRA per device on attention and MLP, all of it shared."""
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

    def describe_client(self, client: int) -> str:
        return f"LoRA r{self.spec.rank}"
