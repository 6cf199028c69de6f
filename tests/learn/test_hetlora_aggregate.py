"""HetLoRA's server math on hand-made tensors: zero-padding, norm weighting, truncation, self-pruning.

Two devices share one module `m`: device 1 has rank 2, device 2 rank 4 (in = 3, out = 2). The
tensors are chosen so that every norm is a whole number:
  B1 A1 = [[3,0,0],[0,4,0]]   → ‖B1 A1‖_F = 5
  B2 A2 = [[9,0,0],[0,0,12]]  → ‖B2 A2‖_F = 15     ⇒ product weights 1/4, 3/4
  ‖B1‖_F = 5, ‖B2‖_F = 15; ‖A1‖_F = √2, ‖A2‖_F = √6 ⇒ per-matrix A weights 1/(1+√3), √3/(1+√3)
"""
from __future__ import annotations

import math

import pytest
import torch

from simfed.learn.aggregate import hetlora_aggregate
from simfed.learn.methods.hetlora import prune_decisions, truncate_state

A1 = torch.tensor([[1.0, 0, 0], [0, 1, 0]])
B1 = torch.tensor([[3.0, 0], [0, 4]])
A2 = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
B2 = torch.tensor([[9.0, 0, 0, 0], [0, 0, 12, 0]])


M, N = "layers.0.mlp.experts.0.m", "layers.0.mlp.experts.0.n"  # MLP LoRA modules: HetLoRA's heterogeneous part


def uploads() -> list[dict[str, torch.Tensor]]:
    return [{f"{M}.lora_A": A1, f"{M}.lora_B": B1}, {f"{M}.lora_A": A2, f"{M}.lora_B": B2}]


def test_product_weighting_pads_and_weights_by_update_norm():
    merged = hetlora_aggregate(uploads(), max_rank=4, weighting="product")
    # A: 1/4·[A1; 0; 0] + 3/4·A2
    expected_a = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 0.75], [0.75, 0.75, 0.75]])
    # B: 1/4·[B1 | 0 0] + 3/4·B2 = [[3/4 + 27/4, 0, 0, 0], [0, 1, 9, 0]]
    expected_b = torch.tensor([[7.5, 0, 0, 0], [0, 1.0, 9, 0]])
    assert set(merged) == {f"{M}.lora_A", f"{M}.lora_B"}
    torch.testing.assert_close(merged[f"{M}.lora_A"], expected_a)
    torch.testing.assert_close(merged[f"{M}.lora_B"], expected_b)


def test_per_matrix_weighting_weights_a_and_b_by_their_own_norms():
    merged = hetlora_aggregate(uploads(), max_rank=4, weighting="per_matrix")
    w2 = math.sqrt(3) / (1 + math.sqrt(3))  # √6 / (√2 + √6): device 2's weight for A
    expected_a = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, w2], [w2, w2, w2]])
    expected_b = torch.tensor([[7.5, 0, 0, 0], [0, 1.0, 9, 0]])  # B norms 5 and 15 → 1/4, 3/4
    torch.testing.assert_close(merged[f"{M}.lora_A"], expected_a)
    torch.testing.assert_close(merged[f"{M}.lora_B"], expected_b)


def test_weights_are_per_module():
    # module `n`: device 1 sent a zero update (weight 0), so the merge is device 2's tensors
    ups = uploads()
    ups[0][f"{N}.lora_A"], ups[0][f"{N}.lora_B"] = A1, torch.zeros(2, 2)
    ups[1][f"{N}.lora_A"], ups[1][f"{N}.lora_B"] = A2, B2
    merged = hetlora_aggregate(ups, max_rank=4)
    torch.testing.assert_close(merged[f"{N}.lora_A"], A2)
    torch.testing.assert_close(merged[f"{N}.lora_B"], B2)
    torch.testing.assert_close(merged[f"{M}.lora_B"], torch.tensor([[7.5, 0, 0, 0], [0, 1.0, 9, 0]]))


def test_all_zero_updates_fall_back_to_a_uniform_mean():
    ups = [{f"{M}.lora_A": A1, f"{M}.lora_B": torch.zeros(2, 2)}, {f"{M}.lora_A": A2, f"{M}.lora_B": torch.zeros(2, 4)}]
    merged = hetlora_aggregate(ups, max_rank=4)
    expected_a = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 0.5], [0.5, 0.5, 0.5]])
    torch.testing.assert_close(merged[f"{M}.lora_A"], expected_a)
    torch.testing.assert_close(merged[f"{M}.lora_B"], torch.zeros(2, 4))


def test_redistribution_truncates_to_each_device_rank():
    merged = hetlora_aggregate(uploads(), max_rank=4)
    to_device_1 = truncate_state(merged, 2)
    torch.testing.assert_close(to_device_1[f"{M}.lora_A"], torch.tensor([[1.0, 0, 0], [0, 1, 0]]))
    torch.testing.assert_close(to_device_1[f"{M}.lora_B"], torch.tensor([[7.5, 0], [0, 1.0]]))
    to_device_2 = truncate_state(merged, 4)
    torch.testing.assert_close(to_device_2[f"{M}.lora_A"], merged[f"{M}.lora_A"])
    to_device_1[f"{M}.lora_A"].add_(1.0)  # a copy: the server's tensor does not move
    torch.testing.assert_close(merged[f"{M}.lora_A"][:2], torch.tensor([[1.0, 0, 0], [0, 1, 0]]))


# --- self-pruning -----------------------------------------------------------------------------


def pair(rank: int, tail_a: float, tail_b: float, module: str = M, gamma_start: int | None = None) -> dict:
    """A rank-`rank` LoRA (in 3, out 2) whose slices from `gamma_start` (default r−1) on have
    ‖A[k:]‖_F = tail_a and ‖B[:, k:]‖_F = tail_b; the head slices are large (they must not count)."""
    k = rank - 1 if gamma_start is None else gamma_start
    a = torch.full((rank, 3), 10.0)
    b = torch.full((2, rank), 10.0)
    a[k:] = 0.0
    b[:, k:] = 0.0
    a[k, 0] = tail_a  # one non-zero entry per tail: its norm is the entry
    b[0, k] = tail_b
    return {f"{module}.lora_A": a, f"{module}.lora_B": b}


def test_prune_lowers_rank_by_one_when_tail_is_below_the_global_tail():
    # γ = 0.99: r = 4 → tail slice 3 (⌊3.96⌋), r = 2 → tail slice 1 (⌊1.98⌋)
    ranks = {0: 4, 1: 2, 2: 4}
    uploads = {0: pair(4, 1.0, 1.0), 1: pair(2, 3.0, 1.0), 2: pair(4, 2.0, 1.0)}
    received = {0: pair(4, 2.0, 1.0), 1: pair(2, 1.0, 1.0), 2: pair(4, 1.0, 2.0)}
    # tails: device 0: 1 < 2 → prune; device 1: 3 > 1 → keep; device 2: 2 = 2 → keep (not below)
    assert prune_decisions(uploads, received, ranks, gamma=0.99, round_index=1) == {0: 3, 1: 2, 2: 4}


def test_prune_never_in_the_first_round():
    ranks = {0: 4}
    uploads, received = {0: pair(4, 0.0, 0.0)}, {0: pair(4, 5.0, 5.0)}
    assert prune_decisions(uploads, received, ranks, gamma=0.99, round_index=0) == {0: 4}
    assert prune_decisions(uploads, received, ranks, gamma=0.99, round_index=1) == {0: 3}


def test_prune_at_most_one_rank_a_round_and_only_reporting_devices():
    ranks = {0: 8, 1: 8}  # device 1 did not report: it keeps its rank whatever happened
    uploads = {0: pair(8, 0.0, 0.0)}  # a tail of exactly zero, far below the global's
    received = {0: pair(8, 100.0, 100.0)}
    assert prune_decisions(uploads, received, ranks, gamma=0.99, round_index=5) == {0: 7, 1: 8}


def test_prune_sums_tail_norms_over_modules():
    # module m: device below the global (1·1 < 2·1); module n: above (3·3 > 1·1) → sum 10 > 3: keep
    up = {**pair(4, 1.0, 1.0, M), **pair(4, 3.0, 3.0, N)}
    rec = {**pair(4, 2.0, 1.0, M), **pair(4, 1.0, 1.0, N)}
    assert prune_decisions({0: up}, {0: rec}, {0: 4}, gamma=0.99, round_index=2) == {0: 4}


@pytest.mark.parametrize("gamma, start", [(0.5, 2), (0.8, 3)])
def test_prune_tail_starts_at_floor_gamma_r(gamma, start):
    # r = 4: the tail is A[⌊γr⌋:4], B[:, ⌊γr⌋:4]; a slice before ⌊γr⌋ must not count
    up = pair(4, 1.0, 1.0, gamma_start=start)
    rec = pair(4, 2.0, 1.0, gamma_start=start)
    assert prune_decisions({0: up}, {0: rec}, {0: 4}, gamma=gamma, round_index=1) == {0: 3}
    # the same tensors but the global's difference moved one slice before the tail: equal tails
    rec_early = pair(4, 1.0, 1.0, gamma_start=start)
    rec_early[f"{M}.lora_A"][start - 1] = 0.0
    rec_early[f"{M}.lora_A"][start - 1, 0] = 99.0
    assert prune_decisions({0: up}, {0: rec_early}, {0: 4}, gamma=gamma, round_index=1) == {0: 4}


def test_attention_is_neither_truncated_nor_pruned():
    """Rank heterogeneity is on the MLP only: attention LoRA (rank 8 everywhere) passes truncation
    untouched, and its tail never decides a pruning."""
    attn = {"layers.0.attn.q.lora_A": torch.ones(8, 3), "layers.0.attn.q.lora_B": torch.ones(2, 8)}
    cut = truncate_state({**attn, **uploads()[1]}, 2)
    assert cut["layers.0.attn.q.lora_A"].shape == (8, 3) and cut[f"{M}.lora_A"].shape == (2, 3)
    up = {**pair(4, 1.0, 1.0), "layers.0.attn.q.lora_A": torch.zeros(4, 3), "layers.0.attn.q.lora_B": torch.zeros(2, 4)}
    rec = {**pair(4, 1.0, 1.0), "layers.0.attn.q.lora_A": torch.ones(4, 3), "layers.0.attn.q.lora_B": torch.ones(2, 4)}
    assert prune_decisions({0: up}, {0: rec}, {0: 4}, gamma=0.99, round_index=1) == {0: 4}  # MLP tails equal
