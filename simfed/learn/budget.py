"""Budget → size: one rule maps a device's resources to its CoMiGS expert count or HetLoRA rank.

Both methods call the same `experts_for_budget`, so a device gets the same share of trainable
parameters under either (the paper's matching: (4,2,2,2) experts of rank 8 ⇔ HetLoRA ranks
(32,16,16,16) for *full* trainable parameters; by *active* parameters top-2 routing makes every
device's active set 2 experts, i.e. rank 16 everywhere).

The rule: a device's budget score is the smaller of its memory and compute relative to a
reference flagship phone (8 GB, 100 GFLOP/s effective, PROFILES.md), and the expert count grows
linearly with the score from 2 (1 generalist + 1 specialist, the weakest device) to `max_experts`.
Memory matters because each expert adds LoRA weights, AdamW moments and (E, B, T, d_ff)
activations; compute because a stronger device can afford the larger local steps.
"""
from __future__ import annotations

import math
from typing import Literal

REFERENCE_MEMORY_BYTES = 8e9  # flagship phone RAM (PROFILES.md: 8–16 GB)
REFERENCE_FLOPS_PER_S = 100e9  # flagship phone effective training FLOP/s (PROFILES.md: 60–250 G)


def budget_score(memory_bytes: float, flops_per_s: float) -> float:
    """min(memory / 8 GB, FLOP/s / 100 G), clipped to [0, 1]."""
    score = min(memory_bytes / REFERENCE_MEMORY_BYTES, flops_per_s / REFERENCE_FLOPS_PER_S)
    return min(max(score, 0.0), 1.0)


def experts_for_budget(memory_bytes: float, flops_per_s: float, max_experts: int, min_experts: int = 2) -> int:
    """Number of MLP experts (1 generalist + specialists), between `min_experts` and `max_experts`:
    min_experts + ⌊score · (max − min + 1)⌋, at most max. min_experts = 1 lets the weakest devices
    hold the generalist alone (the paper's Figure 8 setup)."""
    low = max(1, min(min_experts, max_experts))
    if max_experts <= low:
        return max(1, max_experts)
    score = budget_score(memory_bytes, flops_per_s)
    return low + min(max_experts - low, math.floor(score * (max_experts - low + 1)))


def rank_for_budget(
    memory_bytes: float,
    flops_per_s: float,
    max_experts: int,
    expert_rank: int,
    match: Literal["paper", "full", "active", "none"] = "full",
    top_k: int = 2,
    min_rank: int = 1,
    max_rank: int = 1 << 16,
    min_experts: int = 2,
) -> int:
    """HetLoRA/FlexLoRA MLP rank matched to the CoMiGS device of the same budget.

    full (= paper): rank = expert_rank × E (all experts' parameters); active: rank = expert_rank ×
    min(E, top_k); none: expert_rank whatever the budget. Clipped to [min_rank, max_rank].
    """
    n_experts = experts_for_budget(memory_bytes, flops_per_s, max_experts, min_experts)
    mult = {"paper": n_experts, "full": n_experts, "active": min(n_experts, top_k), "none": 1}[match]
    return int(min(max(expert_rank * mult, min_rank), max_rank))
