"""LoRA primitives: stacked low-rank weights, the wrapped linear, and the batched mixture of MLP experts.

Shapes follow `ALGORITHMS.md`: for a linear map W (in → out), A ∈ R^{r×in} (uniform ±1/√in),
B ∈ R^{out×r} (zeros), h = W x + s · B (A x) with s = alpha / √r (rank-stabilised LoRA).
Weights are stacked over a leading expert axis E so that all experts of a layer run as one einsum,
and so that a later multi-device batch can stack devices on the same axis.

The wrappers (`LoRALinear`, `MixtureMLP`) are installed into the frozen base model ONCE; a
device's adapters are plain modules that are *attached* to the wrappers when the device trains
or is evaluated. The attachment is deliberately not registered as a sub-module: the base model's
own state dict and parameter list never contain a device's tensors.
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from transformers.pytorch_utils import Conv1D

LORA_ALPHA = 16.0
# compiled graphs of the fused mixture a process may hold (`MixtureMLP._fused_dense`): well above
# what one study meets (shapes × E × grad modes), and a bound on what an unusual one can pile up
FUSED_RECOMPILE_LIMIT = 64


def rslora_scale(alpha: float, rank: int) -> float:
    """Rank-stabilised LoRA scaling s = alpha / √r (Kalajdzievski 2023), as the paper uses."""
    return alpha / math.sqrt(rank)


def linear_dims(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a linear map, GPT-2's transposed `Conv1D` included.

    This is the one place that knows Conv1D stores its weight as (in, out).
    """
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        d_in, d_out = module.weight.shape
        return int(d_in), int(d_out)
    raise TypeError(f"cannot put LoRA on {type(module).__name__}: expected nn.Linear or Conv1D")


class StackedLoRA(nn.Module):
    """E independent LoRA pairs for one linear map, stored stacked: A (E, r, in), B (E, out, r)."""

    def __init__(
        self,
        n_experts: int,
        rank: int,
        d_in: int,
        d_out: int,
        alpha: float = LORA_ALPHA,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.rank = rank
        self.scale = rslora_scale(alpha, rank)
        bound = 1.0 / math.sqrt(d_in)
        a = torch.empty(n_experts, rank, d_in, device="cpu")
        a.uniform_(-bound, bound, generator=generator)
        self.lora_A = nn.Parameter(a.to(device))
        self.lora_B = nn.Parameter(torch.zeros(n_experts, d_out, rank, device=device))

    @property
    def n_experts(self) -> int:
        return self.lora_A.shape[0]

    def delta_shared_input(self, x: torch.Tensor) -> torch.Tensor:
        """s·B_e(A_e x) for every expert e on one input. x (..., in) → (E, ..., out).

        All experts' A run as ONE matmul against the stacked (E·r, in) matrix, and the scale is
        applied to the rank-r tensor rather than to the full-width output.
        """
        n_exp, rank, d_in = self.lora_A.shape
        low = torch.nn.functional.linear(x, self.lora_A.reshape(n_exp * rank, d_in)) * self.scale
        low = low.reshape(*x.shape[:-1], n_exp, rank).movedim(-2, 0)  # (E, ..., r)
        return torch.einsum("e...r,eor->e...o", low, self.lora_B)

    def delta_expert(self, x: torch.Tensor, expert: int) -> torch.Tensor:
        """s·B_e(A_e x) of one expert on its own rows. x (n, in) → (n, out)."""
        low = torch.nn.functional.linear(x, self.lora_A[expert]) * self.scale
        return torch.nn.functional.linear(low, self.lora_B[expert])

    def delta_single(self, x: torch.Tensor) -> torch.Tensor:
        """s·B(A x) of a one-expert LoRA, as two plain matmuls. x (..., in) → (..., out)."""
        low = torch.nn.functional.linear(x, self.lora_A[0]) * self.scale
        return torch.nn.functional.linear(low, self.lora_B[0])

    def low_rank_per_expert(self, x: torch.Tensor) -> torch.Tensor:
        """s·A_e x_e for each expert on its own input. x (E, ..., in) → (E, ..., r)."""
        flat = x.reshape(x.shape[0], -1, x.shape[-1])  # (E, N, in)
        low = torch.bmm(flat, self.lora_A.transpose(1, 2)) * self.scale  # (E, N, r)
        return low.reshape(*x.shape[:-1], self.lora_A.shape[1])

    def delta_per_expert(self, x: torch.Tensor) -> torch.Tensor:
        """s·B_e(A_e x_e), each expert on its own input. x (E, ..., in) → (E, ..., out)."""
        return torch.einsum("e...r,eor->e...o", self.low_rank_per_expert(x), self.lora_B)

    def mixed_delta_per_expert(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Σ_e w_e · s·B_e(A_e x_e) without forming any full-width per-expert output.

        x (E, B, T, in), weights (B, T, E) → (B, T, out). The weights are applied to the rank-r
        tensors, then all experts' B run as one matmul against the concatenated (out, E·r) matrix.
        """
        low = self.low_rank_per_expert(x) * weights.permute(2, 0, 1).unsqueeze(-1)  # (E, B, T, r)
        n_exp, d_out, rank = self.lora_B.shape
        low = low.permute(1, 2, 0, 3).reshape(*x.shape[1:-1], n_exp * rank)  # (B, T, E·r)
        b_cat = self.lora_B.permute(1, 0, 2).reshape(d_out, n_exp * rank)  # (out, E·r)
        return torch.nn.functional.linear(low, b_cat)

    def delta_weight(self, expert: int = 0) -> torch.Tensor:
        """The dense update s·B A of one expert, (out, in) — for norms, SVDs and tests."""
        return self.scale * self.lora_B[expert] @ self.lora_A[expert]


class LoRALinear(nn.Module):
    """A frozen linear map with an optional single LoRA attached: base(x) + s·B(A x)."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.d_in, self.d_out = linear_dims(base)
        object.__setattr__(self, "adapter", None)  # a StackedLoRA with E = 1, or None

    def attach(self, adapter: StackedLoRA | None) -> None:
        object.__setattr__(self, "adapter", adapter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        adapter = self.adapter
        if adapter is None:
            return out
        if isinstance(adapter, LoRARows):  # K devices in one batch
            return out + adapter.delta(x)
        return out + adapter.delta_single(x)


@dataclass(frozen=True)
class LoRARows:
    """K devices' one-expert LoRA at one linear, for a batch whose rows are grouped by device:
    rows [k·b, (k+1)·b) belong to device k (`None`: that device has no LoRA here).

    The K pairs run as two `bmm`s on x reshaped to (K, b·T, in). Ranks differ between devices
    (HetLoRA, FlexLoRA), so each A (r_k, in) is zero-padded to (r_max, in) and each B (out, r_k)
    to (out, r_max). This is exact: a padded row of A gives a zero low-rank coordinate, which
    meets a zero column of B, so the delta is device k's own s_k·B_k A_k x; and the padding is a
    constant made by `F.pad`, not a parameter, so no optimizer ever sees it and the gradient
    flowing back through the pad lands on the real (r_k) slice only. Each device keeps its own
    scale s_k = alpha/√r_k (never the padded r_max), folded into its A as s_k·A_k before
    stacking: the same product as the sequential (A_k x)·s_k up to rounding, and no per-forward
    tensor of scales to copy to the GPU.
    """

    loras: list[StackedLoRA | None]

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """x (K·b, ..., in) → (K·b, ..., out), each device's rows through its own LoRA."""
        present = [lora for lora in self.loras if lora is not None]
        if not present:
            return torch.zeros((), dtype=x.dtype, device=x.device)
        n_dev = len(self.loras)
        d_in, d_out = present[0].lora_A.shape[2], present[0].lora_B.shape[1]
        r_max = max(lora.rank for lora in present)
        a_rows, b_cols = [], []
        for lora in self.loras:
            if lora is None:  # no LoRA on this device: a zero pair (constants)
                a_rows.append(present[0].lora_A.new_zeros(r_max, d_in))
                b_cols.append(present[0].lora_B.new_zeros(d_out, r_max))
                continue
            pad = r_max - lora.rank
            a_rows.append(F.pad(lora.lora_A[0] * lora.scale, (0, 0, 0, pad)))  # (r_max, in), rows ≥ r_k zero
            b_cols.append(F.pad(lora.lora_B[0], (0, pad)))  # (out, r_max), columns ≥ r_k zero
        a = torch.stack(a_rows)  # (K, r_max, in): s_k·A_k
        b = torch.stack(b_cols)  # (K, out, r_max)
        flat = x.reshape(n_dev, -1, d_in)  # (K, b·T, in): rows are grouped by device
        low = torch.bmm(flat, a.transpose(1, 2))  # (K, b·T, r_max)
        out = torch.bmm(low, b.transpose(1, 2))  # (K, b·T, out)
        return out.reshape(*x.shape[:-1], d_out)


class ExpertBank(nn.Module):
    """One layer's MLP experts of one device: LoRA on each MLP linear (stacked over E) + router.

    `ups[j]` is the LoRA on the j-th input-side linear (GPT-2: c_fc; Llama: gate, up), `down` on
    the output-side linear. E = 1 has no router (weight 1), which makes the bank a plain LoRA on
    the MLP: Local, FedAvg and HetLoRA use it that way.
    """

    def __init__(
        self,
        n_experts: int,
        rank: int,
        up_dims: list[tuple[int, int]],
        down_dims: tuple[int, int],
        d_model: int,
        alpha: float = LORA_ALPHA,
        top_k: int = 2,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        routed: bool = True,  # False: no router, every expert weighted 1/E (averaged experts)
    ) -> None:
        super().__init__()
        self.ups = nn.ModuleList(
            StackedLoRA(n_experts, rank, i, o, alpha, generator, device) for i, o in up_dims
        )
        self.down = StackedLoRA(n_experts, rank, *down_dims, alpha, generator, device)
        self.top_k = min(top_k, n_experts)
        self.router: nn.Linear | None = None
        if n_experts > 1 and routed:
            self.router = nn.Linear(d_model, n_experts, bias=False, device=device)
            w = torch.empty(n_experts, d_model)
            w.normal_(0.0, 0.02, generator=generator)
            with torch.no_grad():
                self.router.weight.copy_(w)
        # load-balancing coefficients c_j (uniform unless a method sets them)
        self.register_buffer("lb_coeff", torch.ones(n_experts, device=device), persistent=False)
        self.last_lb: torch.Tensor | None = None
        self.last_weights: torch.Tensor | None = None
        self.keep_weights = False  # analysis hook: keep the routing weights of the last forward

    @property
    def n_experts(self) -> int:
        return self.down.n_experts

    @property
    def active_experts(self) -> int:
        """Experts computed per token: k = min(top_k, E) with a router; without one (E = 1, or
        averaged experts) every expert."""
        return self.top_k if self.router is not None else self.n_experts

    def route(self, x: torch.Tensor) -> torch.Tensor:
        """Routing weights (..., E): top-k on the raw logits, softmax over the selected, 0 elsewhere.

        Also records the load-balancing term of this forward in `last_lb`.
        """
        return self.select(x)[0]

    def select(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """`route`'s dense weights (..., E) and the top-k choice behind them: the selected experts
        (..., k) and their softmax weights (..., k), both None without a router (E = 1, or
        averaged experts: every expert weighs 1/E)."""
        if self.router is None:
            self.last_lb = None
            weights = torch.full((*x.shape[:-1], self.n_experts), 1.0 / self.n_experts, dtype=x.dtype, device=x.device)
            return weights, None, None
        logits = self.router(x)
        top_vals, top_idx = logits.topk(self.top_k, dim=-1)
        top_w = top_vals.softmax(dim=-1)
        weights = torch.zeros_like(logits).scatter(-1, top_idx, top_w)
        n_exp = logits.shape[-1]
        chosen = torch.zeros_like(logits).scatter(-1, top_idx, 1.0 / self.top_k)
        f = chosen.reshape(-1, n_exp).mean(0)  # fraction of routing slots per expert
        p = weights.reshape(-1, n_exp).mean(0)  # mean routing probability per expert
        self.last_lb = n_exp * (self.lb_coeff * f * p).sum()
        if self.keep_weights:
            self.last_weights = weights.detach()
        return weights, top_idx, top_w


def _fp32_on_a_cpu(device: torch.device) -> contextlib.AbstractContextManager:
    """No autocast on a CPU (fp32 math), for the grouped path's per-expert work, whose row counts
    change at every step and layer: CPU autocast runs a bf16 matmul through oneDNN, which builds
    (JIT-compiles) a kernel for every new shape, 0.6 ms for a LoRA-sized one and 1.4 ms for a
    d_ff-wide one, and caches 1024 of them, fewer than the shapes a run's grouped blocks meet, so
    the cost never goes away: a CoMiGS-1GXS round ran 1.7x slower in bf16 than in fp32. A cached
    LoRA-sized bf16 matmul is no faster than fp32 (74 vs 60 µs at 160 × 576 × 16), so fp32 loses
    nothing there and is the more precise (Intel Xeon with AMX, torch 2.13). On a GPU, which builds
    no kernel per shape, autocast stays; without autocast, nothing changes."""
    return torch.autocast("cpu", enabled=False) if device.type == "cpu" else contextlib.nullcontext()


class _PermuteRows(torch.autograd.Function):
    """x[order] for a permutation `order` of x's rows, whose backward is grad[inverse]: a gather.

    Autograd's own backward of x[order] cannot know that `order` is a permutation, so it
    scatter-adds the gradient into a zero tensor (`index_put_` with accumulate), which on a CPU
    is a slow, serial pass; by a permutation every row receives exactly one gradient row, so
    gathering it by the inverse permutation gives the same values (0 + g = g) in a fraction of
    the time (`_grouped`'s sorted rows: about 4% of a CoMiGS-1GXS round, measured with
    torch.profiler on bench/batched.py)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return x[order]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (inverse,) = ctx.saved_tensors
        return grad[inverse], None, None


def permute_rows(x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """x[order], `inverse` = the inverse permutation of `order` (`_PermuteRows`)."""
    return _PermuteRows.apply(x, order, inverse)


@dataclass(frozen=True)
class BankRows:
    """K devices' expert banks at one MLP, for a batch whose rows are grouped by device (rows
    [k·b, (k+1)·b) are device k's; `None`: that device has no bank, the plain frozen MLP)."""

    banks: list[ExpertBank | None]


ExpertCompute = Literal["auto", "dense", "grouped"]


class MixtureMLP(nn.Module):
    """The frozen MLP turned into a token-level mixture of LoRA experts.

    Expert e is the whole frozen MLP with its own LoRA on every linear, so the output is
    Σ_e w_e(x) · MLP_e(x). Two exact identities keep this as cheap as one LoRA-MLP:
    the frozen input-side matmuls W x are the same for every expert (computed once), and the
    frozen output-side map is linear with Σ_e w_e = 1, so Σ_e w_e (W_d h_e + b) = W_d (Σ_e w_e h_e) + b
    (computed once). Only the LoRA terms and the element-wise activation run per expert.

    Two ways to run the per-expert part, equal to each other to float rounding (tests: 1e-6 on
    values and gradients). `dense` runs every expert on every token, batched over E in one einsum;
    unselected experts carry weight 0 and receive no gradient. `grouped` runs each expert only on
    the tokens routed to it (tokens sorted by expert, as MoE kernels do): k = min(2, E) experts'
    work per token instead of E — what a device does and what `simfed.learn.flops` charges.
    `auto` (the default) is grouped exactly when a router selects fewer experts than the bank has
    (E > k) and the bank is on a CPU in fp32; with E ≤ k every expert is selected for every token,
    nothing could be skipped, and the dense path (one batched einsum, no gathers) is the faster
    one; on a GPU, dense keeps a step free of host synchronisation, and under CPU autocast dense
    keeps the matmul shapes fixed (`grouped_for`).
    """

    def __init__(
        self,
        mlp: nn.Module,
        up_names: list[str],
        down_name: str,
        gated: bool,
        activation: Callable[[torch.Tensor], torch.Tensor],
        dropout: nn.Module | None,
        compute: ExpertCompute = "auto",
    ) -> None:
        super().__init__()
        self.mlp = mlp
        self.up_names = list(up_names)
        self.down_name = down_name
        self.gated = gated
        self.activation = activation
        self.dropout = dropout
        self.compute: ExpertCompute = compute
        self.fused = False  # the dense path's per-expert work compiled (`_fused_dense`)
        self.up_dims = [linear_dims(getattr(mlp, n)) for n in up_names]
        self.down_dims = linear_dims(getattr(mlp, down_name))
        object.__setattr__(self, "bank", None)

    def attach(self, bank: ExpertBank | None) -> None:
        object.__setattr__(self, "bank", bank)

    def grouped_for(self, bank: ExpertBank) -> bool:
        """Whether `bank` runs on the grouped (top-k only) path under this site's `compute`.

        `auto` never picks it on a GPU: splitting the sorted rows into per-expert blocks needs
        the block sizes on the host (`bincount().tolist()`), one host synchronisation per layer
        and step, which stalls a GPU's queue; the dense path has none, and a GPU has the spare
        FLOPs for E/k times the (small) LoRA and element-wise work. Nor under autocast on a CPU:
        the blocks' row counts change at every step, and each new shape of a bf16 matmul costs a
        oneDNN kernel build (`_fp32_on_a_cpu`); a SmolLM2 CoMiGS-1GXS round of 2 devices (E 4
        and 2, 2 × 64 tokens) took 8.2 s dense against 11.9 s grouped in bf16 (17.9 s before
        the grouped blocks ran in fp32; Intel Xeon with AMX). In fp32 `auto` stays grouped,
        whose numbers the shipped runs have (dense was faster there too on that host: 8.7 s
        against 11.6 s; `expert_compute: dense` chooses it)."""
        if bank.router is None or self.compute == "dense":
            return False
        if self.compute == "grouped":
            return True
        return (bank.top_k < bank.n_experts and bank.down.lora_A.device.type == "cpu"
                and not torch.is_autocast_enabled("cpu"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bank: ExpertBank | BankRows | None = self.bank
        if bank is None:
            return self.mlp(x)
        if isinstance(bank, BankRows):
            out = self._device_rows(x, bank)
        else:
            mixed, delta = self._grouped(x, bank) if self.grouped_for(bank) else self._dense(x, bank)
            out = getattr(self.mlp, self.down_name)(mixed) + delta
        if self.dropout is not None:
            out = self.dropout(out)
        return out

    def _device_rows(self, x: torch.Tensor, rows: BankRows) -> torch.Tensor:
        """K devices' mixtures in one batch (rows grouped by device, `BankRows`).

        The frozen matmuls — the input-side W x and the output-side W_d (Σ_e w_e h_e) — are the
        bulk of an MLP's work and run ONCE over all K·b rows. Only each device's LoRA terms,
        routing and activation run per device, on its own rows with its own bank, through the very
        code a device alone runs (`_dense`/`_grouped`): its expert count, its top-k = min(2, E_k),
        its grouped or dense path and its load-balancing term (`last_lb`, on its own bank over its
        own tokens) are exactly the sequential ones. This is why routers are not stacked with
        −inf-masked logits: per-device routing is already exact and costs little next to W x.
        """
        n_dev = len(rows.banks)
        per = x.shape[0] // n_dev
        if all(bank is not None and bank.n_experts == 1 for bank in rows.banks):
            return self._single_lora_rows(x, rows)
        bases = [getattr(self.mlp, name)(x) for name in self.up_names]  # each (K·b, T, d_ff)
        # per-device views by `split`, not by slicing: a slice's backward writes a zero tensor of
        # the whole batch's size (K of them a site), split's backward concatenates once
        x_parts = x.split(per)
        base_parts = [base.split(per) for base in bases]
        mixed_parts, delta_parts = [], []
        for k, bank in enumerate(rows.banks):
            own = [parts[k] for parts in base_parts]
            if bank is None:  # the plain MLP on this device's rows
                mixed_parts.append(self.activation(own[0]) * own[1] if self.gated else self.activation(own[0]))
                delta_parts.append(None)
                continue
            parts = (self._grouped(x_parts[k], bank, own) if self.grouped_for(bank)
                     else self._dense(x_parts[k], bank, own))
            mixed_parts.append(parts[0])
            delta_parts.append(parts[1])
        out = getattr(self.mlp, self.down_name)(torch.cat(mixed_parts))  # (K·b, T, d_out)
        if all(d is None for d in delta_parts):
            return out
        zero = out.new_zeros(per, *out.shape[1:])
        return out + torch.cat([zero if d is None else d for d in delta_parts])

    def _single_lora_rows(self, x: torch.Tensor, rows: BankRows) -> torch.Tensor:
        """Every device with one MLP LoRA (E = 1, no router: HetLoRA, FlexLoRA, FFA-LoRA, FedAvg with
        `match: none`): its MLP is a plain LoRA-MLP, so all K devices' LoRAs run stacked (`LoRARows`,
        two `bmm`s a linear) instead of one device after the other. The same function as `_dense`
        with E = 1, whose routing weight is exactly 1."""
        banks = [bank for bank in rows.banks if bank is not None]
        ups = [getattr(self.mlp, name)(x) + LoRARows([b.ups[j] for b in banks]).delta(x)
               for j, name in enumerate(self.up_names)]  # each (K·b, T, d_ff)
        hidden = self.activation(ups[0]) * ups[1] if self.gated else self.activation(ups[0])
        for bank in banks:
            bank.last_lb = None  # no router: no load-balancing term (as `ExpertBank.select`)
        return getattr(self.mlp, self.down_name)(hidden) + LoRARows([b.down for b in banks]).delta(hidden)

    def _dense(self, x: torch.Tensor, bank: ExpertBank,
               bases: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Every expert on every token, stacked over E: (E, B, T, d_ff) hidden tensors.

        Returns (Σ_e w_e h_e, the down LoRA's mixed delta), both (B, T, ·); the caller applies the
        frozen down projection to the first. `bases`: the frozen W x of each input-side linear,
        when the caller computed them already (a batch of devices); else computed here. Under
        `fused` (and E > 1) the same code runs compiled (`_fused_dense`)."""
        if bases is None:
            bases = [getattr(self.mlp, name)(x) for name in self.up_names]
        if self.fused and bank.n_experts > 1:
            return self._fused_dense(x, bank, bases)
        return self._dense_terms(x, bank, bases)

    def _dense_terms(self, x: torch.Tensor, bank: ExpertBank,
                     bases: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """`_dense`'s per-expert work, from the frozen W x on: the LoRA deltas, the routing (and
        its load-balancing term, `bank.last_lb`), each expert's hidden
        h_e = act(W_g x + Δ_g,e) ⊙ (W_u x + Δ_u,e) (E, B, T, d_ff), Σ_e w_e h_e, and the down LoRA."""
        deltas = [lora.delta_shared_input(x) for lora in bank.ups]  # each (E, B, T, d_ff)
        weights = bank.route(x)  # (B, T, E)
        ups = [base.unsqueeze(0) + delta for base, delta in zip(bases, deltas)]
        hidden = self.activation(ups[0]) * ups[1] if self.gated else self.activation(ups[0])
        if hidden.shape[0] == 1:  # one expert: its weight is 1
            mixed = hidden[0]
        else:
            mixed = (hidden * weights.permute(2, 0, 1).unsqueeze(-1)).sum(0)
        return mixed, bank.down.mixed_delta_per_expert(hidden, weights)

    @functools.cached_property
    def _fused_dense(self) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
        """`_dense_terms` compiled (`training.fuse_mixture`): torch.compile fuses the LoRA scale
        and layout moves, the routing's top-k softmax, the adds, the activation, the product and
        the weighted sum into a few loops, forward and backward, instead of one full pass over
        (E, B, T, d_ff) memory each; the matmuls stay library calls. The same arithmetic: values
        and gradients equal the eager path's to ~1e-7 relative (fused loops round in another
        order), so it is opted into, never the default. The frozen W x stays outside (the
        batched path computes it once for all devices). The graph takes the bank's tensors as
        inputs, so the sites of one model share one compiled graph per (shape, E, rank):
        compiled at the first call of such a shape (seconds), reused by every other site, bank
        and step after; bench/local_step.py --fuse measures it.

        Graphs are per (shape, E, rank, which tensors need gradients, grad mode) over ALL sites
        and models of the process (dynamo caches them on `_dense_terms`' code), and a run meets
        many: a GPU run of CoMiGS-1GXS alone needs at least E 2..4 × {expert step, router step,
        evaluation} = 9 (more with an evaluation's last, shorter batch), past dynamo's default
        limit of 8 compiles a function, beyond which it runs the eager code with a log line only.
        The call raises that limit for this function's compiles (dynamo reads it when it
        compiles, which happens inside the call) to `FUSED_RECOMPILE_LIMIT`, and leaves the
        process-wide setting as it was. One patch object serves every call: each new one would
        leave a context variable behind in torch's config."""
        compiled = torch.compile(self._dense_terms, dynamic=False)
        config = torch._dynamo.config
        name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"  # torch < 2.7
        raised_limit = config.patch(**{name: FUSED_RECOMPILE_LIMIT})

        def fused(*args: object) -> tuple[torch.Tensor, torch.Tensor]:
            with raised_limit:
                return compiled(*args)

        return fused

    def _grouped(self, x: torch.Tensor, bank: ExpertBank,
                 bases: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each expert on its own tokens only: k·N rows of per-expert work for N = B·T tokens.

        The N·k (token, expert) slots are sorted by expert (a stable argsort), so expert e's rows
        are one contiguous block; the frozen W x (computed once, (N, d_ff)) and x are gathered
        into that order, each expert runs its LoRA and activation on its block, and the weighted
        results go back to token order through the inverse permutation and a sum over the k
        slots. Only gathers by permutation (backward too: `permute_rows`) and fixed-order sums:
        deterministic on CPU and GPU.
        """
        _, top_idx, top_w = bank.select(x)  # (B, T, k) each
        k = top_idx.shape[-1]
        flat = x.reshape(-1, x.shape[-1])  # (N, d)
        n_tok = flat.shape[0]
        slot_expert = top_idx.reshape(-1)  # (N·k,): slot t·k + j is token t's j-th choice
        order = torch.argsort(slot_expert, stable=True)  # slots grouped by expert
        inverse = torch.argsort(order)
        counts = torch.bincount(slot_expert, minlength=bank.n_experts).tolist()
        w_sorted = permute_rows(top_w.reshape(-1), order, inverse).unsqueeze(-1)  # (N·k, 1)
        x_sorted = permute_rows(flat.repeat_interleave(k, dim=0), order, inverse)  # (N·k, d)
        if bases is None:
            bases = [getattr(self.mlp, name)(flat) for name in self.up_names]
        bases = [permute_rows(base.reshape(n_tok, -1).repeat_interleave(k, dim=0), order, inverse) for base in bases]
        x_blocks = x_sorted.split(counts)
        base_blocks = [b.split(counts) for b in bases]
        weighted, down_delta = [], []
        with _fp32_on_a_cpu(x.device):
            for e, (xe, we) in enumerate(zip(x_blocks, w_sorted.split(counts))):
                xe = xe.to(bank.down.lora_A.dtype)  # a bf16 model's input meets the fp32 adapters (a no-op in fp32)
                ups = [blocks[e] + lora.delta_expert(xe, e) for blocks, lora in zip(base_blocks, bank.ups)]
                hidden = self.activation(ups[0]) * ups[1] if self.gated else self.activation(ups[0])
                hw = hidden * we  # (n_e, d_ff): w_e · h_e; the down LoRA is linear, so it takes w_e·h_e
                weighted.append(hw)
                down_delta.append(bank.down.delta_expert(hw, e))
        mixed = permute_rows(torch.cat(weighted), inverse, order).reshape(n_tok, k, -1).sum(1)  # (N, d_ff) = Σ_e w_e h_e
        delta = permute_rows(torch.cat(down_delta), inverse, order).reshape(n_tok, k, -1).sum(1)  # (N, d_out)
        return mixed.reshape(*x.shape[:-1], -1), delta.reshape(*x.shape[:-1], -1)
