"""FedAvg (McMahan et al. 2017) on LoRA: every adapter tensor shared, (weighted) mean at the server.

Adapters by `match` (simfed/learn/matching.py): the paper's two averaged MLP LoRA experts (no
router) plus attention LoRA, or with `match: none` one LoRA on attention and MLP."""
from __future__ import annotations

import torch

from simfed.learn.adapters import AdaptedModel
from simfed.learn.matching import describe_lora, device_shape
from simfed.learn.aggregate import buffered_merge, deltas
from simfed.learn.methods.base import ClientInfo, EvalResult, LocalPlan, Method, Split, Update
from simfed.learn.methods.common import recipe_for
from simfed.learn.methods.federation import AdapterFederation
from simfed.learn.spec import MethodSpec, TrainingSpec


class FedAvg(Method):
    def __init__(self, spec: MethodSpec, training: TrainingSpec, model: AdaptedModel) -> None:
        self.name = spec.name
        self.spec = spec
        self.fed = AdapterFederation(model, recipe_for(spec, training), lambda name: True, training.eval_windows)

    def setup(self, clients: list[ClientInfo], seed: int) -> None:
        shape = device_shape(self.spec, 0.0, 0.0)  # the same for every device (simfed/learn/matching.py)
        self.fed.setup(clients, {c.client_id: shape for c in clients}, shape, seed)

    def download(self, client: int) -> dict[str, torch.Tensor]:
        return self.fed.download(client)

    def local_update(self, client: int, received: dict[str, torch.Tensor], plan: LocalPlan) -> Update:
        return self.fed.local_update(client, received, plan)

    def aggregate(self, updates: list[Update], round_index: int) -> None:
        if updates:
            self.fed.mean_into_server(updates, self.fed.client_weights(updates, self.spec.aggregation_weights))

    def aggregate_async(self, updates: list[Update], bases: list[dict[str, torch.Tensor]], weights: list[float],
                        round_index: int) -> None:
        """The shared tensors move by the buffered deltas, weighted by aggregation_weights × staleness."""
        if updates:
            own = self.fed.client_weights(updates, self.spec.aggregation_weights)
            changes = deltas([u.upload for u in updates], bases)
            self.fed.server = buffered_merge(self.fed.server, changes, [a * s for a, s in zip(own, weights)],
                                             self.spec.server_lr)

    def evaluate(self, client: int, split: Split = "test") -> EvalResult:
        return self.fed.evaluate(client, split)

    def upload_shapes(self, client: int) -> dict[str, tuple[int, ...]]:
        return self.fed.shapes_of(client, self.fed.shared_names(client))

    def download_shapes(self, client: int) -> dict[str, tuple[int, ...]]:
        return self.upload_shapes(client)

    def round_flops(self, client: int) -> float:
        return self.fed.round_flops(client)

    def describe_client(self, client: int) -> str:
        return describe_lora(self.fed.shapes[client])
