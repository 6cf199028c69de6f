"""Local: LoRA per device, trained on its own data, never communicated (a lower anchor).

Adapters by `match` (simfed/learn/matching.py): the paper's two averaged MLP LoRA experts (no
router) plus attention LoRA, or with `match: none` one LoRA on attention and MLP."""
from __future__ import annotations

import torch

from simfed.learn.adapters import AdaptedModel
from simfed.learn.matching import describe_lora, device_shape
from simfed.learn.methods.base import ClientInfo, EvalResult, LocalPlan, Method, Split, Update
from simfed.learn.methods.common import recipe_for
from simfed.learn.methods.federation import AdapterFederation
from simfed.learn.spec import MethodSpec, TrainingSpec


class Local(Method):
    def __init__(self, spec: MethodSpec, training: TrainingSpec, model: AdaptedModel) -> None:
        self.name = spec.name
        self.spec = spec
        self.fed = AdapterFederation(model, recipe_for(spec, training), lambda name: False, training.eval_windows)

    def setup(self, clients: list[ClientInfo], seed: int) -> None:
        shape = device_shape(self.spec, 0.0, 0.0)  # the same for every device (simfed/learn/matching.py)
        self.fed.setup(clients, {c.client_id: shape for c in clients}, shape, seed)

    def download(self, client: int) -> dict[str, torch.Tensor]:
        return {}

    def local_update(self, client: int, received: dict[str, torch.Tensor], plan: LocalPlan) -> Update:
        return self.fed.local_update(client, received, plan)

    def aggregate(self, updates: list[Update], round_index: int) -> None:
        """Nothing to merge: the server only schedules."""

    def evaluate(self, client: int, split: Split = "test") -> EvalResult:
        return self.fed.evaluate(client, split)

    def upload_shapes(self, client: int) -> dict[str, tuple[int, ...]]:
        return {}

    def download_shapes(self, client: int) -> dict[str, tuple[int, ...]]:
        return {}

    def round_flops(self, client: int) -> float:
        return self.fed.round_flops(client)

    def describe_client(self, client: int) -> str:
        return describe_lora(self.fed.shapes[client])
