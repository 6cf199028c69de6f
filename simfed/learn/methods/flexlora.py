"""FlexLoRA (Bai et al. 2024): one LoRA per device at a budget rank; the server merges full updates by SVD.

Rank heterogeneity and the SVD merge are on the MLP LoRA only, as in the CoMiGS reference:
attention LoRA has rank `attn_rank` (8) everywhere and is averaged uniformly, as in HetLoRA.
Device i holds MLP rank r_i = `rank_for_budget` (the same rule as HetLoRA) at its own scaling
s_i = alpha/√r_i, and uploads its (A_i, B_i). Per module the server forms
ΔW = Σ_i (n_i/Σn)·s_i·B_i A_i (n_i = the size of device i's training split, in tokens), takes its SVD U S Vᵀ, and keeps
the top r_max triplets as global factors U√S, √S Vᵀ (`aggregate.flexlora_aggregate`). Device j
downloads the first r_j of them divided by √s_j (`aggregate.flexlora_redistribute`), so that
s_j·B_j A_j = U_{r_j} S_{r_j} V_{r_j}ᵀ, the best rank-r_j approximation of ΔW. (The reference code
keeps only the last client's term and mixes scalings; this is the paper's definition.)
Round 0 has no ΔW yet: every device starts from the first r_i rows of one server init of rank
r_max (A uniform, B = 0), like HetLoRA.
"""
from __future__ import annotations

import torch

from simfed.learn.adapters import AdaptedModel, AdapterShape
from simfed.learn.aggregate import flexlora_aggregate, flexlora_redistribute, lora_modules, weighted_mean
from simfed.learn.matching import device_shape
from simfed.learn.merge_flops import flexlora_merge_flops
from simfed.learn.lora import rslora_scale
from simfed.learn.methods.adapter_method import AdapterMethod
from simfed.learn.methods.base import ClientInfo, LocalPlan, PendingUpdate, Update
from simfed.learn.methods.hetlora import attention_part, mlp_part, truncate_state, truncated_shapes
from simfed.learn.spec import FlexLoRASpec, TrainingSpec

State = dict[str, torch.Tensor]


class FlexLoRA(AdapterMethod):
    spec_type = FlexLoRASpec

    def __init__(self, spec: FlexLoRASpec, training: TrainingSpec, model: AdaptedModel) -> None:
        super().__init__(spec, training, model, shared=lambda name: True)
        self.ranks: dict[int, int] = {}
        self.max_rank = 0
        self.merged = False  # whether the server holds SVD factors (after the first aggregation)

    def setup(self, clients: list[ClientInfo], seed: int) -> None:
        s = self.spec
        shapes = {c.client_id: device_shape(s, c.budget.memory_bytes, c.budget.flops_per_s) for c in clients}
        self.ranks = {c: shape.mlp_rank for c, shape in shapes.items()}
        self.max_rank = max(self.ranks.values())
        self.fed.setup(clients, shapes, AdapterShape(1, self.max_rank, s.attn_rank), seed)
        self.fed.fresh_payload = self.download  # a device that never trained holds its share of the server

    def scale(self, client: int) -> float:
        """s_i = alpha/√r_i of the device's MLP LoRA."""
        return rslora_scale(self.fed.shapes[client].alpha, self.ranks[client])

    def download(self, client: int) -> State:
        rank = self.ranks[client]
        if not self.merged:  # the server init: a plain LoRA, truncated
            return truncate_state(self.fed.server, rank)
        out = flexlora_redistribute(mlp_part(self.fed.server), rank, self.scale(client))
        out.update({n: t.clone() for n, t in attention_part(self.fed.server).items()})
        return out

    def begin_update(self, client: int, received: State, plan: LocalPlan) -> PendingUpdate:
        rank = float(self.ranks[client])
        return self.fed.begin_update(client, received, plan).then(
            lambda u: Update(client, u.upload, u.n_tokens, u.train_loss, {"rank": rank}))

    def aggregate(self, updates: list[Update], round_index: int) -> None:
        if not updates:
            return
        uploads = [u.upload for u in updates]
        weights = [float(self.fed.train_size(u.client)) for u in updates]  # n_i: training-split sizes
        scales = [self.scale(u.client) for u in updates]
        merged = flexlora_aggregate([mlp_part(u) for u in uploads], weights, scales, self.max_rank)
        merged.update(weighted_mean([attention_part(u) for u in uploads]))  # attention: uniform mean
        self.fed.server = merged
        self.merged = True

    def upload_shapes(self, client: int) -> dict[str, tuple[int, ...]]:
        return truncated_shapes(self.fed.server, self.ranks[client])

    def aggregation_flops(self, clients: list[int]) -> float:
        """The factored SVD of every MLP module at k = Σ r_i, attention a mean (simfed/learn/merge_flops.py)."""
        mlp = mlp_part(self.fed.server)
        modules = [tuple(mlp[f"{m}.lora_B"].shape[:1]) + tuple(mlp[f"{m}.lora_A"].shape[1:]) for m in lora_modules(mlp)]
        attention = sum(t.numel() for t in attention_part(self.fed.server).values())
        return flexlora_merge_flops(modules, [self.ranks[c] for c in clients], attention)

    def describe_client(self, client: int) -> str:
        return f"MLP rank {self.ranks[client]}"

    def state_dict(self) -> dict:
        state = self.fed.state_dict()
        state["meta"]["merged"] = self.merged
        return state

    def load_state_dict(self, state: dict) -> None:
        self.fed.load_state_dict(state)
        self.merged = bool(state["meta"]["merged"])
