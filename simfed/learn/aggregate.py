"""The servers' merge math as pure functions over flat state dicts (name → tensor).

Each function is unit-tested against a hand computation on tiny tensors. LoRA pairs are found by
name: `<module>.lora_A` (r, in) with `<module>.lora_B` (out, r).
"""
from __future__ import annotations

import math
from typing import Literal

import torch

State = dict[str, torch.Tensor]


def weighted_mean(states: list[State], weights: list[float] | None = None) -> State:
    """Σ_i w_i · state_i / Σ_i w_i per tensor (uniform when `weights` is None)."""
    if not states:
        raise ValueError("weighted_mean of no states")
    w = torch.tensor(weights if weights is not None else [1.0] * len(states), dtype=torch.float64)
    w = w / w.sum()
    return {
        name: sum(float(wi) * s[name].double() for wi, s in zip(w, states)).to(states[0][name].dtype)
        for name in states[0]
    }


def mean_of_carriers(server: State, uploads: list[State], weights: list[float]) -> State:
    """Σ_i w_i · upload_i / Σ_i w_i per server tensor, over the uploads that carry it (FedAvg and
    the methods whose devices share different subsets); tensors no upload carries are left out of
    the result (the server keeps them). float64 with Python-float weights w_i / Σ w (summed in
    order), cast back to the server tensor's dtype: the arithmetic of the runs already recorded,
    which `weighted_mean`'s torch-summed weights could change in the last bit."""
    merged: State = {}
    for name, current in server.items():
        carriers = [(up[name], w) for up, w in zip(uploads, weights) if name in up]
        if not carriers:
            continue
        total = sum(w for _, w in carriers)
        merged[name] = sum((w / total) * t.double() for t, w in carriers).to(current.dtype)
    return merged


def deltas(uploads: list[State], bases: list[State]) -> list[State]:
    """Δ_i = upload_i − base_i per tensor of the upload (base_i: what device i downloaded), float64."""
    return [{n: t.double() - base[n].double() for n, t in up.items()} for up, base in zip(uploads, bases)]


def buffered_merge(
    server: State, changes: list[State], weights: list[float] | list[dict[str, float]], server_lr: float = 1.0
) -> State:
    """FedBuff/FedAsync's server step: server + η_g · Σ_i w_i Δ_i / Σ_i w_i, per tensor.

    `changes` are the buffered deltas Δ_i (upload − the payload device i downloaded, possibly
    from an older model version), `weights` one per delta (staleness weights 1/√(1+s) times any
    method weight), or one dict name → weight per delta where weights differ per tensor
    (HetLoRA's per-module norms). Each tensor is summed over the deltas that carry it, its
    weights normalised over those (a tensor nobody carries keeps its value).

    Normalisation: by Σ w_i, not by the buffer size K as in FedBuff (Nguyen et al. 2022,
    Algorithm 1: Σ_i w_i Δ_i / K). With η_g = 1 and fresh updates (s = 0, every base = the
    server), this is exactly the synchronous weighted mean, so the policies differ only by
    staleness; with K-normalisation stale updates would also shrink the step (η_g absorbs that).
    Computed in float64, returned in the server's dtypes.
    """
    merged = dict(server)
    for name, value in server.items():
        carriers = [
            (d[name], float(w[name] if isinstance(w, dict) else w)) for d, w in zip(changes, weights) if name in d
        ]
        total = sum(w for _, w in carriers)
        if not carriers or total <= 0:
            continue
        step = sum((w / total) * d.double() for d, w in carriers)
        merged[name] = (value.double() + server_lr * step).to(value.dtype)
    return merged


def lora_modules(state: State) -> list[str]:
    """The module prefixes that have a LoRA pair in `state`, in name order."""
    return sorted(n[: -len(".lora_A")] for n in state if n.endswith(".lora_A"))


def zero_pad_rank(a: torch.Tensor, b: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad A (r, in) with zero rows and B (out, r) with zero columns up to `rank`."""
    r = a.shape[0]
    if r > rank:
        raise ValueError(f"cannot pad rank {r} down to {rank}")
    a_pad = torch.zeros(rank, a.shape[1], dtype=a.dtype)
    b_pad = torch.zeros(b.shape[0], rank, dtype=b.dtype)
    a_pad[:r] = a
    b_pad[:, :r] = b
    return a_pad, b_pad


def truncate_rank(a: torch.Tensor, b: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `rank` rows of A and columns of B (HetLoRA's redistribution)."""
    return a[:rank].clone(), b[:, :rank].clone()


def hetlora_weights(
    uploads: list[State], module: str, weighting: Literal["product", "per_matrix"]
) -> tuple[list[float], list[float]]:
    """Per-device weights of one module, normalised over devices: (weights for A, weights for B).

    product (the paper): w_i ∝ ‖B_i A_i‖_F for both matrices.
    per_matrix (the reference code): A weighted by ‖A_i‖_F, B by ‖B_i‖_F.
    A device whose norm is 0 for every device falls back to uniform weights.
    """

    def normalise(values: list[float]) -> list[float]:
        total = sum(values)
        return [v / total for v in values] if total > 0 else [1.0 / len(values)] * len(values)

    a_s = [u[f"{module}.lora_A"].double() for u in uploads]
    b_s = [u[f"{module}.lora_B"].double() for u in uploads]
    if weighting == "product":
        w = normalise([float(torch.linalg.norm(b @ a)) for a, b in zip(a_s, b_s)])
        return w, w
    return normalise([float(torch.linalg.norm(a)) for a in a_s]), normalise([float(torch.linalg.norm(b)) for b in b_s])


def hetlora_aggregate(
    uploads: list[State], max_rank: int, weighting: Literal["product", "per_matrix"] = "product"
) -> State:
    """Zero-pad every device's A (rows) and B (columns) to `max_rank`, then norm-weighted sum."""
    merged: State = {}
    for module in lora_modules(uploads[0]):
        w_a, w_b = hetlora_weights(uploads, module, weighting)
        padded = [zero_pad_rank(u[f"{module}.lora_A"], u[f"{module}.lora_B"], max_rank) for u in uploads]
        merged[f"{module}.lora_A"] = sum(w * a.double() for w, (a, _) in zip(w_a, padded)).float()
        merged[f"{module}.lora_B"] = sum(w * b.double() for w, (_, b) in zip(w_b, padded)).float()
    return merged


def hetlora_buffered_merge(
    server: State, uploads: list[State], bases: list[State], staleness: list[float], max_rank: int,
    weighting: Literal["product", "per_matrix"] = "product", server_lr: float = 1.0,
) -> State:
    """HetLoRA under FedBuff/FedAsync: each device's delta at its own rank, zero-padded to `max_rank`,
    merged by `buffered_merge` with weight (HetLoRA norm weight of its upload) × (staleness weight).

    The norm weights are those of the synchronous merge (`hetlora_weights` on the uploads, per
    module: ‖B_i A_i‖_F, or per matrix), i.e. the importance of the device's model, not of its
    change; a slice above a device's rank gets a zero delta from it (and still counts its weight).
    """
    changes: list[State] = [{} for _ in uploads]
    weights: list[dict[str, float]] = [{} for _ in uploads]
    raw = deltas(uploads, bases)
    for module in lora_modules(uploads[0]):
        w_a, w_b = hetlora_weights(uploads, module, weighting)
        for i, d in enumerate(raw):
            a, b = f"{module}.lora_A", f"{module}.lora_B"
            changes[i][a], changes[i][b] = zero_pad_rank(d[a], d[b], max_rank)
            weights[i][a], weights[i][b] = w_a[i] * staleness[i], w_b[i] * staleness[i]
    return buffered_merge(server, changes, weights, server_lr)


def tail_start(rank: int, gamma: float) -> int:
    """First index of the slices HetLoRA's self-pruning looks at: ⌊γ r⌋ (r − 1 for γ = 0.99, r ≤ 100)."""
    return int(math.floor(gamma * rank))


def tail_norm(state: State, rank: int, gamma: float) -> torch.Tensor:
    """Σ_modules ‖A[⌊γr⌋:r]‖_F · ‖B[:, ⌊γr⌋:r]‖_F — the self-pruning regulariser without λ_p.

    Differentiable in the state's tensors (it is the training-time regulariser too).
    """
    k = tail_start(rank, gamma)
    total = torch.zeros(())
    for module in lora_modules(state):
        a, b = state[f"{module}.lora_A"], state[f"{module}.lora_B"]
        total = total + torch.linalg.norm(a[k:rank]) * torch.linalg.norm(b[:, k:rank])
    return total


# --- FlexLoRA (Bai et al. 2024) -----------------------------------------------------------------


def _pad_factors(b: torch.Tensor, a: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B (out, k) and A (k, in) with k ≤ rank, padded with zero columns / rows to `rank`."""
    a_pad, b_pad = zero_pad_rank(a, b, rank)
    return b_pad, a_pad


def low_rank_svd(b_cat: torch.Tensor, a_cat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The thin SVD U, S, Vᵀ of the product b_cat @ a_cat, (out, k) @ (k, in), never forming it.

    Reduced QR of both factors (b_cat = Q_b R_b, a_catᵀ = Q_a R_a) leaves only the small core
    R_b R_aᵀ (at most k × k) to decompose: b_cat a_cat = Q_b (R_b R_aᵀ) Q_aᵀ = (Q_b u) s (vᵀ Q_aᵀ).
    Exact, and costs O((out + in)·k²) instead of an out × in SVD.
    """
    q_b, r_b = torch.linalg.qr(b_cat)  # (out, m), (m, k)
    q_a, r_a = torch.linalg.qr(a_cat.T)  # (in, n), (n, k)
    u, s, vh = torch.linalg.svd(r_b @ r_a.T, full_matrices=False)  # core (m, n)
    return q_b @ u, s, vh @ q_a.T


def flexlora_aggregate(uploads: list[State], weights: list[float], scales: list[float], rank: int) -> State:
    """Per module, the best rank-`rank` factors of ΔW = Σ_i (w_i/Σw)·s_i·B_i A_i, at scale 1.

    Returns `<module>.lora_B` = U_r √S_r (out, rank) and `<module>.lora_A` = √S_r V_rᵀ (rank, in), so
    B A = U_r S_r V_rᵀ; the square root splits each singular value evenly between the two factors.
    Devices may upload different ranks; when Σ r_i < rank the factors are padded with zeros.
    Computed in float64, returned in the uploads' dtype.
    """
    total = float(sum(weights))
    merged: State = {}
    for module in lora_modules(uploads[0]):
        a_s = [u[f"{module}.lora_A"] for u in uploads]
        b_cat = torch.cat([(w / total) * s * u[f"{module}.lora_B"].double() for u, w, s in zip(uploads, weights, scales)], 1)
        a_cat = torch.cat([a.double() for a in a_s], 0)
        u_, s_, vh = low_rank_svd(b_cat, a_cat)
        k = min(rank, s_.shape[0])
        root = s_[:k].sqrt()
        b, a = _pad_factors(u_[:, :k] * root, root[:, None] * vh[:k], rank)
        merged[f"{module}.lora_B"] = b.to(a_s[0].dtype)
        merged[f"{module}.lora_A"] = a.to(a_s[0].dtype)
    return merged


def flexlora_redistribute(global_state: State, rank: int, scale: float) -> State:
    """A device's rank-r pair from the global factors: the first r, each divided by √s.

    Then s·B A = U_r S_r V_rᵀ, the best rank-r approximation of the aggregated ΔW (Eckart–Young),
    at the device's own scaling s = alpha/√r.
    """
    root = math.sqrt(scale)
    out: State = {}
    for module in lora_modules(global_state):
        a, b = truncate_rank(global_state[f"{module}.lora_A"], global_state[f"{module}.lora_B"], rank)
        out[f"{module}.lora_A"], out[f"{module}.lora_B"] = a / root, b / root
    return out


# --- PCL (Wagner et al. 2024) ---------------------------------------------------------------------


def softmax_neg(values: list[float]) -> list[float]:
    """softmax(−v): PCL's collaboration weights from perplexities (lower perplexity, more weight)."""
    t = torch.softmax(-torch.tensor(values, dtype=torch.float64), dim=0)
    return [float(x) for x in t]
