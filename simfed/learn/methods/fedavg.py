"""FedAvg (McMahan et al. 2017) on LoRA: every adapter tensor shared, (weighted) mean at the server.

Adapters by `match` (simfed/learn/matching.py): the paper's two averaged MLP LoRA experts (no
router) plus attention LoRA, or with `match: none` one LoRA on attention and MLP."""
from __future__ import annotations

import torch

from simfed.learn.adapters import AdaptedModel, AdapterShape
from simfed.learn.flops import ModelDims, lora_numel
from simfed.learn.methods.adapter_method import AdapterMethod
from simfed.learn.methods.base import MergesAsync, ShapeCosts, Update
from simfed.learn.spec import FedAvgSpec, TrainingSpec


class FedAvg(AdapterMethod, MergesAsync, ShapeCosts):
    spec_type = FedAvgSpec

    def __init__(self, spec: FedAvgSpec, training: TrainingSpec, model: AdaptedModel) -> None:
        super().__init__(spec, training, model, shared=lambda name: True)

    @classmethod
    def payload_numel(cls, spec: FedAvgSpec, dims: ModelDims, shape: AdapterShape) -> int:
        """Every tensor: attention LoRA and every expert (no router)."""
        attn, expert = lora_numel(dims, shape)
        return attn + shape.n_experts * expert

    def aggregate_async(self, updates: list[Update], bases: list[dict[str, torch.Tensor]], weights: list[float],
                        round_index: int) -> None:
        self.buffered_mean(updates, bases, weights)
