"""CoMiGS: a mixture of generalist (shared) and specialist (private) LoRA experts per device.

Variants (ALGORITHMS.md): 1g1s (E = 2: one generalist, one specialist), 1gxs (E from the
device's budget, min_experts … max_experts; E = 1 is the generalist alone, no router), 2g (both
experts shared), 2s (both private). Attention LoRA (rank `attn_rank`, 8 as in the paper) is always
shared. The router is always private. Experts train on the train split, routers on the
validation split every τ expert steps.
"""
from __future__ import annotations

import torch

from simfed.learn.adapters import AdaptedModel, AdapterShape
from simfed.learn.flops import ModelDims, lora_numel
from simfed.learn.matching import device_shape
from simfed.learn.methods.adapter_method import AdapterMethod
from simfed.learn.methods.base import ClientInfo, LocalPlan, MergesAsync, PendingUpdate, ShapeCosts, Update
from simfed.learn.methods.common import expert_index, is_attention
from simfed.learn.methods.federation import AdapterFederation
from simfed.learn.spec import CoMiGSSpec, TrainingSpec


def generalist_coefficients(n_experts: int, importance: float = 0.5) -> torch.Tensor:
    """Load-balancing coefficients that favour the generalist (paper eq. 6):
    c_0 = 1/(E·imp), c_j = (E−1)/(E(1−imp)) for the specialists."""
    c = torch.full((n_experts,), (n_experts - 1) / (n_experts * (1 - importance)))
    c[0] = 1.0 / (n_experts * importance)
    return c


def favour_generalist(fed: AdapterFederation, client: int, lb_form: str, importance: float) -> None:
    """With `lb_form: generalist`, the client's expert banks get the coefficients of eq. 6 (the
    generalist's `importance`) before it trains (its state is created if it has none yet)."""
    state = fed.store.get_or_create(client)
    if lb_form == "generalist":
        for bank in state.adapters.banks():
            bank.lb_coeff.copy_(generalist_coefficients(bank.n_experts, importance))


# generalists per variant: experts 0 … n-1 of a device are shared through the server (2G: both of its 2)
SHARED_EXPERTS = {"1g1s": 1, "1gxs": 1, "2g": 2, "2s": 0}


class CoMiGS(AdapterMethod, MergesAsync, ShapeCosts):
    spec_type = CoMiGSSpec

    def __init__(self, spec: CoMiGSSpec, training: TrainingSpec, model: AdaptedModel) -> None:
        generalists = SHARED_EXPERTS[spec.variant]

        def shared(name: str) -> bool:
            if is_attention(name):
                return True
            e = expert_index(name)
            if e is None:  # routers
                return False
            return e < generalists

        super().__init__(spec, training, model, shared)

    @classmethod
    def payload_numel(cls, spec: CoMiGSSpec, dims: ModelDims, shape: AdapterShape) -> int:
        """Attention LoRA and the generalists; specialists and the router stay on the device."""
        attn, expert = lora_numel(dims, shape)
        return attn + min(SHARED_EXPERTS[spec.variant], shape.n_experts) * expert

    def setup(self, clients: list[ClientInfo], seed: int) -> None:
        s = self.spec
        # E per device (1GXS: from the budget, min_experts … max_experts; E = 1 is the generalist alone),
        # expert rank `rank`, attention rank `attn_rank` (the paper: 8, whatever the expert rank)
        shapes = {c.client_id: device_shape(s, c.budget.memory_bytes, c.budget.flops_per_s) for c in clients}
        server_experts = 2 if s.variant == "2g" else 1
        self.fed.setup(clients, shapes, AdapterShape(server_experts, s.rank, s.attn_rank), seed)

    def begin_update(self, client: int, received: dict[str, torch.Tensor], plan: LocalPlan) -> PendingUpdate:
        favour_generalist(self.fed, client, self.spec.lb_form, self.spec.lb_importance)
        return self.fed.begin_update(client, received, plan)

    def aggregate_async(self, updates: list[Update], bases: list[dict[str, torch.Tensor]], weights: list[float],
                        round_index: int) -> None:
        self.buffered_mean(updates, bases, weights)

    def describe_client(self, client: int) -> str:
        e = self.fed.shapes[client].n_experts
        return {"2g": "2G", "2s": "2S"}.get(self.spec.variant, f"1G+{e - 1}S" if e > 1 else "1G")
