"""The MoE baselines whose router trains jointly with the experts: Local-MoE, FedAvg-MoE, pFedMoE.

Same model as CoMiGS 1G1S (two MLP experts of `rank` per layer, top-2 router, attention LoRA),
but no bi-level split and no validation data: the routers sit in the expert optimizer and every
step trains experts, attention LoRA and routers together on CE(train) + λ·LB (same lr schedule
and weight decay). What is shared differs:

- local_moe:  nothing leaves the device (attention LoRA included);
- fedavg_moe: attention LoRA and both experts are averaged; routers stay on the device;
- pfedmoe:    (Yi et al. 2024) attention LoRA and expert 0 averaged, expert 1 private — 1G1S.

(The "-tr" ablation, alternating updates with router phases on training batches, is CoMiGS with
`router_split: train`.)
"""
from __future__ import annotations

import dataclasses

import torch

from simfed.learn.adapters import AdaptedModel, AdapterShape
from simfed.learn.flops import round_flops
from simfed.learn.matching import device_shape
from simfed.learn.methods.adapter_method import AdapterMethod
from simfed.learn.methods.base import ClientInfo, LocalPlan, PendingUpdate
from simfed.learn.methods.comigs import favour_generalist
from simfed.learn.methods.common import expert_index, is_attention, recipe_for
from simfed.learn.spec import JointMoESpec, TrainingSpec

N_EXPERTS = 2
# kind → (attention shared, the experts shared)
SHARING = {"local_moe": (False, set()), "fedavg_moe": (True, {0, 1}), "pfedmoe": (True, {0})}
LABELS = {"local_moe": "Local-MoE", "fedavg_moe": "FedAvg-MoE", "pfedmoe": "1G+1S joint"}


class JointMoE(AdapterMethod):
    spec_type = JointMoESpec

    def __init__(self, spec: JointMoESpec, training: TrainingSpec, model: AdaptedModel) -> None:
        attention_shared, shared_experts = SHARING[spec.kind]

        def shared(name: str) -> bool:
            if is_attention(name):
                return attention_shared
            e = expert_index(name)
            return e is not None and e in shared_experts  # routers (e None) never leave the device

        super().__init__(spec, training, model, shared, dataclasses.replace(recipe_for(spec, training), joint_router=True))
        self.server_experts = max(len(shared_experts), 1)

    def setup(self, clients: list[ClientInfo], seed: int) -> None:
        s = self.spec
        shapes = {c.client_id: device_shape(s, c.budget.memory_bytes, c.budget.flops_per_s) for c in clients}
        assert all(shape.n_experts == N_EXPERTS for shape in shapes.values())
        self.fed.setup(clients, shapes, AdapterShape(self.server_experts, s.rank, s.attn_rank), seed)

    def begin_update(self, client: int, received: dict[str, torch.Tensor], plan: LocalPlan) -> PendingUpdate:
        favour_generalist(self.fed, client, self.spec.lb_form, self.spec.lb_importance)
        return self.fed.begin_update(client, received, plan)

    def round_flops(self, client: int) -> float:
        """Expert steps (no router phases) plus the routers' weight gradients, 2·d·E a token and layer."""
        fed, r = self.fed, self.fed.recipe
        shape = fed.shapes[client]
        tokens = r.batch_size * r.seq_len
        router_grads = tokens * fed.dims.n_layers * 2.0 * fed.dims.d_model * shape.n_experts
        return r.local_steps * router_grads + round_flops(fed.dims, shape, r.batch_size, r.seq_len, r.local_steps)

    def describe_client(self, client: int) -> str:
        return LABELS[self.spec.kind]
