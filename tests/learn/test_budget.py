"""Budget → size: the paper's matching of CoMiGS experts to HetLoRA ranks, and monotonicity."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simfed.learn.budget import experts_for_budget, rank_for_budget

# a flagship phone (12 GB, 150 GFLOP/s) and three low-end ones (2–4 GB, 15–30 GFLOP/s);
# score = min(mem / 8 GB, FLOP/s / 100 G): 1.0 and ≤ 0.3 → 4 and 2 experts
FLEET = [(12e9, 150e9), (3e9, 25e9), (2e9, 30e9), (4e9, 15e9)]


def test_experts_of_a_flagship_and_three_low_end_phones():
    assert tuple(experts_for_budget(m, f, max_experts=4) for m, f in FLEET) == (4, 2, 2, 2)


def test_full_matching_gives_ranks_32_16_16_16():
    ranks = tuple(rank_for_budget(m, f, max_experts=4, expert_rank=8, match="full") for m, f in FLEET)
    assert ranks == (32, 16, 16, 16)


def test_active_matching_gives_rank_16_everywhere():
    ranks = tuple(rank_for_budget(m, f, max_experts=4, expert_rank=8, match="active") for m, f in FLEET)
    assert ranks == (16, 16, 16, 16)


def test_rank_is_clipped_to_the_method_bounds():
    assert rank_for_budget(12e9, 150e9, 4, 8, "full", min_rank=4, max_rank=24) == 24
    assert rank_for_budget(1e9, 1e9, 4, 1, "full", min_rank=4, max_rank=32) == 4


def test_the_weaker_resource_decides():
    # plenty of memory cannot make up for a slow chip, nor the other way round
    assert experts_for_budget(64e9, 10e9, 4) == 2
    assert experts_for_budget(1e9, 1e12, 4) == 2


memory = st.floats(min_value=0, max_value=64e9, allow_nan=False)
flops = st.floats(min_value=0, max_value=1e12, allow_nan=False)
max_experts = st.integers(min_value=2, max_value=8)


@given(memory, memory, flops, max_experts)
def test_experts_monotone_in_memory(m1, m2, f, e_max):
    lo, hi = sorted((m1, m2))
    assert experts_for_budget(lo, f, e_max) <= experts_for_budget(hi, f, e_max)


@given(memory, flops, flops, max_experts)
def test_experts_monotone_in_flops(m, f1, f2, e_max):
    lo, hi = sorted((f1, f2))
    assert experts_for_budget(m, lo, e_max) <= experts_for_budget(m, hi, e_max)


@given(memory, flops, max_experts)
def test_experts_within_two_and_max(m, f, e_max):
    assert 2 <= experts_for_budget(m, f, e_max) <= e_max


# score = min(mem / 8 GB, FLOP/s / 100 G); with 4 experts at most, E = 2 below 1/3, 3 below 2/3, 4 above
@pytest.mark.parametrize("m, f, experts, full", [
    (2.6e9, 1e12, 2, 16),   # score 0.325
    (2.7e9, 1e12, 3, 24),   # score 0.3375: past 1/3
    (5.4e9, 1e12, 4, 32),   # score 0.675: past 2/3
    (64e9, 60e9, 3, 24),    # score 0.6, from the chip
    (64e9, 70e9, 4, 32),    # score 0.7
])
def test_experts_and_matched_ranks_at_the_score_boundaries(m, f, experts, full):
    assert experts_for_budget(m, f, max_experts=4) == experts
    assert rank_for_budget(m, f, 4, 8, "full") == full
    assert rank_for_budget(m, f, 4, 8, "active") == 16  # top-2 routing: two experts' worth, always


@given(memory, memory, flops, max_experts, st.sampled_from(["full", "active"]))
def test_matched_rank_is_monotone_in_memory_and_active_never_exceeds_full(m1, m2, f, e_max, match):
    lo, hi = sorted((m1, m2))
    assert rank_for_budget(lo, f, e_max, 8, match) <= rank_for_budget(hi, f, e_max, 8, match)
    assert rank_for_budget(lo, f, e_max, 8, "active") <= rank_for_budget(lo, f, e_max, 8, "full") <= 8 * e_max


# --- min_experts = 1: the weakest devices hold the generalist alone (the paper's Figure 8) ---------
# E = 1 + ⌊score · 4⌋ capped at 4 for min 1, max 4: score 0.1 → 1, 0.25 → 2, 0.5 → 3, 1 → 4


def test_min_experts_one_gives_the_weakest_the_generalist_alone():
    budgets = [(12e9, 150e9), (4e9, 50e9), (3e9, 25e9), (3e9, 10e9)]  # scores 1, 0.5, 0.25, 0.1
    assert tuple(experts_for_budget(m, f, 4, min_experts=1) for m, f in budgets) == (4, 3, 2, 1)
    assert tuple(rank_for_budget(m, f, 4, 8, "full", min_experts=1) for m, f in budgets) == (32, 24, 16, 8)


@given(memory, flops, max_experts, st.integers(min_value=1, max_value=8))
def test_experts_within_min_and_max(m, f, e_max, e_min):
    assert min(e_min, e_max) <= experts_for_budget(m, f, e_max, min_experts=e_min) <= e_max


@given(memory, flops, st.integers(min_value=3, max_value=8))
def test_min_experts_two_is_the_former_rule(m, f, e_max):
    score = min(max(min(m / 8e9, f / 100e9), 0.0), 1.0)
    import math
    assert experts_for_budget(m, f, e_max, min_experts=2) == 2 + min(e_max - 2, math.floor(score * (e_max - 1)))
