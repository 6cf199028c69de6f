"""CoMiGS: a mixture of generalist (shared) and specialist (private) LoRA experts per device.

Variants (ALGORITHMS.md): 1g1s (E = 2: one generalist, one specialist), 1gxs (E from the
device's budget, 2 … max_experts), 2g (both experts shared), 2s (both private). Attention LoRA
is always shared. The router is always private. Experts train on the train split, routers on the
validation split every τ expert steps.
"""
from __future__ import annotations

import torch

from simfed.learn.adapters import AdaptedModel, AdapterShape
from simfed.learn.budget import experts_for_budget
from simfed.learn.methods.adapter_method import AdapterMethod
from simfed.learn.methods.base import ClientInfo, LocalPlan, MergesAsync, Update
from simfed.learn.methods.common import expert_index, is_attention
from simfed.learn.methods.federation import AdapterFederation
from simfed.learn.spec import CoMiGSSpec, TrainingSpec


def generalist_coefficients(n_experts: int, importance: float = 0.5) -> torch.Tensor:
    """Load-balancing coefficients that favour the generalist (paper eq. 6):
    c_0 = 1/(E·imp), c_j = (E−1)/(E(1−imp)) for the specialists."""
    c = torch.full((n_experts,), (n_experts - 1) / (n_experts * (1 - importance)))
    c[0] = 1.0 / (n_experts * importance)
    return c


def favour_generalist(fed: AdapterFederation, client: int, lb_form: str) -> None:
    """With `lb_form: generalist`, the client's expert banks get the coefficients of eq. 6 before
    it trains (its state is created if it has none yet)."""
    state = fed.store.get_or_create(client)
    if lb_form == "generalist":
        for bank in state.adapters.banks():
            bank.lb_coeff.copy_(generalist_coefficients(bank.n_experts))


class CoMiGS(AdapterMethod, MergesAsync):
    spec_type = CoMiGSSpec

    def __init__(self, spec: CoMiGSSpec, training: TrainingSpec, model: AdaptedModel) -> None:
        shared_experts = {"1g1s": {0}, "1gxs": {0}, "2g": None, "2s": set()}[spec.variant]

        def shared(name: str) -> bool:
            if is_attention(name):
                return True
            e = expert_index(name)
            if e is None:  # routers
                return False
            return shared_experts is None or e in shared_experts

        super().__init__(spec, training, model, shared)

    def _n_experts(self, client: ClientInfo) -> int:
        if self.spec.variant != "1gxs":
            return 2
        b = client.budget
        return experts_for_budget(b.memory_bytes, b.flops_per_s, self.spec.max_experts)

    def setup(self, clients: list[ClientInfo], seed: int) -> None:
        r = self.spec.rank
        shapes = {c.client_id: AdapterShape(self._n_experts(c), r, r) for c in clients}
        server_experts = 2 if self.spec.variant == "2g" else 1
        self.fed.setup(clients, shapes, AdapterShape(server_experts, r, r), seed)

    def local_update(self, client: int, received: dict[str, torch.Tensor], plan: LocalPlan) -> Update:
        favour_generalist(self.fed, client, self.spec.lb_form)
        return self.fed.local_update(client, received, plan)

    def aggregate_async(self, updates: list[Update], bases: list[dict[str, torch.Tensor]], weights: list[float],
                        round_index: int) -> None:
        self.buffered_mean(updates, bases, weights)

    def describe_client(self, client: int) -> str:
        e = self.fed.shapes[client].n_experts
        return {"2g": "2G", "2s": "2S"}.get(self.spec.variant, f"1G+{e - 1}S")
