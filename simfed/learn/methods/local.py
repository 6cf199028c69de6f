"""Local: LoRA per device, trained on its own data, never communicated (a lower anchor).

Adapters by `match` (simfed/learn/matching.py): the paper's two averaged MLP LoRA experts (no
router) plus attention LoRA, or with `match: none` one LoRA on attention and MLP."""
from __future__ import annotations

import torch

from simfed.learn.adapters import AdaptedModel, AdapterShape
from simfed.learn.flops import ModelDims
from simfed.learn.methods.adapter_method import AdapterMethod
from simfed.learn.methods.base import ShapeCosts, Update
from simfed.learn.spec import LocalSpec, TrainingSpec


class Local(AdapterMethod, ShapeCosts):
    spec_type = LocalSpec

    def __init__(self, spec: LocalSpec, training: TrainingSpec, model: AdaptedModel) -> None:
        super().__init__(spec, training, model, shared=lambda name: False)

    def download(self, client: int) -> dict[str, torch.Tensor]:
        return {}

    def aggregate(self, updates: list[Update], round_index: int) -> None:
        """Nothing to merge: the server only schedules."""

    def upload_shapes(self, client: int) -> dict[str, tuple[int, ...]]:
        return {}

    @classmethod
    def payload_numel(cls, spec: LocalSpec, dims: ModelDims, shape: AdapterShape) -> int:
        return 0
