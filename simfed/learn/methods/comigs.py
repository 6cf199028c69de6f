"""CoMiGS: a mixture of generalist (shared) and specialist (private) LoRA experts per device.

Variants (ALGORITHMS.md): 1g1s (E = 2: one generalist, one specialist), 1gxs (E from the
device's budget, min_experts … max_experts; E = 1 is the generalist alone, no router), 2g (both
experts shared), 2s (both private). Attention LoRA (rank `attn_rank`, 8 as in the paper) is always shared. The router is always private. Experts train on the train split, routers on the
validation split every τ expert steps.
"""
from __future__ import annotations

import torch

from simfed.learn.adapters import AdaptedModel, AdapterShape
from simfed.learn.aggregate import buffered_merge, deltas
from simfed.learn.matching import device_shape
from simfed.learn.methods.base import ClientInfo, EvalResult, LocalPlan, Method, Split, Update
from simfed.learn.methods.common import expert_index, is_attention, recipe_for
from simfed.learn.methods.federation import AdapterFederation
from simfed.learn.spec import MethodSpec, TrainingSpec


def generalist_coefficients(n_experts: int, importance: float = 0.5) -> torch.Tensor:
    """Load-balancing coefficients that favour the generalist (paper eq. 6):
    c_0 = 1/(E·imp), c_j = (E−1)/(E(1−imp)) for the specialists."""
    c = torch.full((n_experts,), (n_experts - 1) / (n_experts * (1 - importance)))
    c[0] = 1.0 / (n_experts * importance)
    return c


class CoMiGS(Method):
    def __init__(self, spec: MethodSpec, training: TrainingSpec, model: AdaptedModel, router_split: str = "val") -> None:
        self.name = spec.name
        self.spec = spec
        variant = spec.variant
        shared_experts = {"1g1s": {0}, "1gxs": {0}, "2g": None, "2s": set()}[variant]

        def shared(name: str) -> bool:
            if is_attention(name):
                return True
            e = expert_index(name)
            if e is None:  # routers
                return False
            return shared_experts is None or e in shared_experts

        self.fed = AdapterFederation(model, recipe_for(spec, training, router_split), shared, training.eval_windows)

    def setup(self, clients: list[ClientInfo], seed: int) -> None:
        s = self.spec
        # E per device (1GXS: from the budget, min_experts … max_experts; E = 1 is the generalist alone),
        # expert rank `rank`, attention rank `attn_rank` (the paper: 8, whatever the expert rank)
        shapes = {c.client_id: device_shape(s, c.budget.memory_bytes, c.budget.flops_per_s) for c in clients}
        server_experts = 2 if s.variant == "2g" else 1
        self.fed.setup(clients, shapes, AdapterShape(server_experts, s.rank, s.attn_rank), seed)

    def download(self, client: int) -> dict[str, torch.Tensor]:
        return self.fed.download(client)

    def local_update(self, client: int, received: dict[str, torch.Tensor], plan: LocalPlan) -> Update:
        state = self.fed.store.get_or_create(client)
        if self.spec.lb_form == "generalist":
            for bank in state.adapters.banks():
                bank.lb_coeff.copy_(generalist_coefficients(bank.n_experts, self.spec.lb_importance))
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
        e = self.fed.shapes[client].n_experts
        return {"2g": "2G", "2s": "2S"}.get(self.spec.variant, f"1G+{e - 1}S" if e > 1 else "1G")
