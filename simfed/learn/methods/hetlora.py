"""HetLoRA (Cho et al. 2023): one LoRA per device on the MLP with a rank sized to its budget.

Rank heterogeneity is on the MLP only, as in the CoMiGS reference: attention LoRA has rank
`attn_rank` (8) on every device and is averaged uniformly; only the MLP LoRA below is per device.
The server holds every MLP LoRA at r_max. Download truncates it to the device's current rank; upload is
the device's rank-r_i pair; aggregation zero-pads A (rows) and B (columns) to r_max and weights
devices by their update's norm (paper: ‖B_i A_i‖_F per module; option: the reference code's
per-matrix norms). Self-pruning (on the MLP LoRA only): the device trains with
λ_p·Σ ‖A[⌊γr⌋:r]‖·‖B[:,⌊γr⌋:r]‖ added to its loss; after a round (never the first) the server
lowers a device's rank by one when the tail norm of its upload is below the tail norm of the global
model it received, at the same slices.
Pruned slices stay zero on the device (they also get no gradient: A's pruned rows meet zero B
columns). Each device keeps its initial scaling s = alpha/√r_i0: pruning zeroes slices rather than
re-scaling the rest.
"""
from __future__ import annotations

import torch

from simfed.learn.adapters import AdaptedModel, AdapterShape, DeviceAdapters
from simfed.learn.aggregate import (
    buffered_merge, deltas, hetlora_aggregate, hetlora_buffered_merge, lora_modules, tail_norm, tail_start,
    truncate_rank, weighted_mean, zero_pad_rank,
)
from simfed.learn.flops import ModelDims, lora_numel
from simfed.learn.matching import device_shape
from simfed.learn.lora import StackedLoRA
from simfed.learn.methods.adapter_method import AdapterMethod
from simfed.learn.methods.base import ClientInfo, LocalPlan, MergesAsync, PendingUpdate, ShapeCosts, Update
from simfed.learn.spec import HetLoRASpec, TrainingSpec
from simfed.learn.store import pack_states, unpack_states

State = dict[str, torch.Tensor]


def is_mlp(name: str) -> bool:
    return ".mlp." in name


def mlp_part(state: State) -> State:
    """The MLP LoRA tensors: the rank-heterogeneous part."""
    return {n: t for n, t in state.items() if is_mlp(n)}


def attention_part(state: State) -> State:
    """The attention LoRA tensors: rank `attn_rank` everywhere, averaged uniformly."""
    return {n: t for n, t in state.items() if not is_mlp(n)}


def truncated_shapes(state: State, rank: int) -> dict[str, tuple[int, ...]]:
    """Shapes of `truncate_state(state, rank)` without copying any tensor (the engine asks per device-round)."""
    shapes: dict[str, tuple[int, ...]] = {n: tuple(t.shape) for n, t in attention_part(state).items()}
    for m in lora_modules(mlp_part(state)):
        shapes[f"{m}.lora_A"] = (min(rank, state[f"{m}.lora_A"].shape[0]), state[f"{m}.lora_A"].shape[1])
        shapes[f"{m}.lora_B"] = (state[f"{m}.lora_B"].shape[0], min(rank, state[f"{m}.lora_B"].shape[1]))
    return shapes


def truncate_state(state: State, rank: int) -> State:
    """The MLP LoRA truncated to `rank`; attention LoRA as it is (copied)."""
    out: State = {n: t.clone() for n, t in attention_part(state).items()}
    for m in lora_modules(mlp_part(state)):
        out[f"{m}.lora_A"], out[f"{m}.lora_B"] = truncate_rank(state[f"{m}.lora_A"], state[f"{m}.lora_B"], rank)
    return out


def pad_state(state: State, rank: int) -> State:
    """The MLP LoRA zero-padded to `rank`; attention LoRA as it is."""
    out: State = dict(attention_part(state))
    for m in lora_modules(mlp_part(state)):
        out[f"{m}.lora_A"], out[f"{m}.lora_B"] = zero_pad_rank(state[f"{m}.lora_A"], state[f"{m}.lora_B"], rank)
    return out


def mlp_loras(adapters: DeviceAdapters) -> list[StackedLoRA]:
    """The device's MLP LoRA modules (every layer's input-side and output-side linears)."""
    return [lora for bank in adapters.banks() for lora in (*bank.ups, bank.down)]


def prune_decisions(
    uploads: dict[int, State], received: dict[int, State], ranks: dict[int, int], gamma: float, round_index: int
) -> dict[int, int]:
    """The new rank of every reporting device: one lower when its MLP tail norm is below the global's."""
    new = dict(ranks)
    if round_index == 0:
        return new
    for client, upload in uploads.items():
        r = ranks[client]
        if r <= 1:
            continue
        if float(tail_norm(mlp_part(upload), r, gamma)) < float(tail_norm(mlp_part(received[client]), r, gamma)):
            new[client] = r - 1
    return new


class HetLoRA(AdapterMethod, MergesAsync, ShapeCosts):
    spec_type = HetLoRASpec

    def __init__(self, spec: HetLoRASpec, training: TrainingSpec, model: AdaptedModel) -> None:
        super().__init__(spec, training, model, shared=lambda name: True)
        self.ranks: dict[int, int] = {}  # current (possibly pruned) rank per client
        self.initial_ranks: dict[int, int] = {}
        self.max_rank = 0
        self._received: dict[int, State] = {}

    @classmethod
    def payload_numel(cls, spec: HetLoRASpec, dims: ModelDims, shape: AdapterShape) -> int:
        """Attention LoRA and the MLP LoRA at the device's (initial) rank."""
        attn, expert = lora_numel(dims, shape)
        return attn + shape.n_experts * expert

    def setup(self, clients: list[ClientInfo], seed: int) -> None:
        s = self.spec
        shapes = {c.client_id: device_shape(s, c.budget.memory_bytes, c.budget.flops_per_s) for c in clients}
        self.initial_ranks = {c: shape.mlp_rank for c, shape in shapes.items()}
        self.ranks = dict(self.initial_ranks)
        self.max_rank = max(self.initial_ranks.values())
        self.fed.setup(clients, shapes, AdapterShape(1, self.max_rank, s.attn_rank), seed)
        self.fed.fresh_payload = lambda c: pad_state(self.download(c), self.initial_ranks[c])

    def download(self, client: int) -> State:
        return truncate_state(self.fed.server, self.ranks[client])

    def as_local_payload(self, client: int, received: State) -> State:
        """The payload as the device's tensors hold it: zero-padded to its initial rank
        (simfed/learn/finite.py resets a diverged device to it)."""
        return pad_state(received, self.initial_ranks[client])

    def begin_update(self, client: int, received: State, plan: LocalPlan) -> PendingUpdate:
        rank = self.ranks[client]
        self._received[client] = {k: v.clone() for k, v in received.items()}
        padded = pad_state(received, self.initial_ranks[client])
        gamma, lam = self.spec.prune_gamma, self.spec.prune_lambda

        def regulariser(adapters: DeviceAdapters) -> torch.Tensor:
            k = tail_start(rank, gamma)
            terms = [
                torch.linalg.norm(m.lora_A[0, k:rank]) * torch.linalg.norm(m.lora_B[0, :, k:rank])
                for m in mlp_loras(adapters)
            ]
            return lam * torch.stack(terms).sum()

        def keep_pruned_zero(adapters: DeviceAdapters) -> None:
            with torch.no_grad():
                for m in mlp_loras(adapters):
                    m.lora_A[:, rank:].zero_()
                    m.lora_B[:, :, rank:].zero_()

        def truncated(update: Update) -> Update:
            upload = truncate_state(update.upload, rank)
            return Update(client, upload, update.n_tokens, update.train_loss, {"rank": float(rank)})

        pending = self.fed.begin_update(client, padded, plan, regulariser if lam > 0 else None, keep_pruned_zero)
        return pending.then(truncated)

    def aggregate(self, updates: list[Update], round_index: int) -> None:
        if not updates:
            return
        uploads = [u.upload for u in updates]
        merged = hetlora_aggregate([mlp_part(u) for u in uploads], self.max_rank, self.spec.norm_weighting)
        merged.update(weighted_mean([attention_part(u) for u in uploads]))  # attention: uniform mean
        self.fed.server = merged
        received = {u.client: self._received.pop(u.client) for u in updates if u.client in self._received}
        reporting = {u.client: u.upload for u in updates if u.client in received}
        self.ranks = prune_decisions(reporting, received, self.ranks, self.spec.prune_gamma, round_index)

    def aggregate_async(self, updates: list[Update], bases: list[State], weights: list[float],
                        round_index: int) -> None:
        """FedBuff/FedAsync: MLP deltas at each device's rank, zero-padded to r_max, weighted by the
        synchronous norm weights × the staleness weights (`hetlora_buffered_merge`); attention deltas
        by the staleness weights alone; self-pruning as in `aggregate`, against the payload each
        device received."""
        if not updates:
            return
        uploads = [u.upload for u in updates]
        server = hetlora_buffered_merge(self.fed.server, [mlp_part(u) for u in uploads], [mlp_part(b) for b in bases],
                                        weights, self.max_rank, self.spec.norm_weighting, self.spec.server_lr)
        attention = deltas([attention_part(u) for u in uploads], [attention_part(b) for b in bases])
        self.fed.server = buffered_merge(server, attention, list(weights), self.spec.server_lr)
        received = {u.client: self._received.pop(u.client) for u in updates if u.client in self._received}
        reporting = {u.client: u.upload for u in updates if u.client in received}
        self.ranks = prune_decisions(reporting, received, self.ranks, self.spec.prune_gamma, round_index)

    def upload_shapes(self, client: int) -> dict[str, tuple[int, ...]]:
        return truncated_shapes(self.fed.server, self.ranks[client])

    def describe_client(self, client: int) -> str:
        return f"MLP rank {self.ranks[client]}"

    def remote_context(self, client: int) -> dict:
        return {"rank": self.ranks[client]}

    def apply_remote_context(self, client: int, context: dict) -> None:
        self.ranks[client] = int(context["rank"])

    def remote_outcome(self, client: int) -> dict:
        return {"received": self._received.pop(client)}  # self-pruning compares against it at aggregation

    def absorb_remote_outcome(self, client: int, outcome: dict) -> None:
        self._received[client] = outcome["received"]

    def state_dict(self) -> dict:
        state = self.fed.state_dict()
        state["meta"]["ranks"] = sorted(self.ranks.items())
        pack_states("received", self._received, state["tensors"], state["meta"])
        return state

    def load_state_dict(self, state: dict) -> None:
        self.fed.load_state_dict(state)
        self.ranks = {int(c): int(r) for c, r in state["meta"]["ranks"]}
        self._received = unpack_states("received", state["tensors"], state["meta"])
