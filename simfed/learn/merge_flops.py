"""FLOPs of the server's merge, from shapes alone: what the simulated server spends aggregating.

The simulated world turns these into seconds with the server's FLOP/s (`world.server.flops_per_s`),
so a round's next download waits for the merge as it does on a real server. Like the device cost
model (`simfed.learn.flops`) it counts what simfed's own merge computes, from the shapes that do
not change during a run (the server's tensors, each device's rank as set up), so that a resumed
run's replay and a dry run get the same answer as the live run:

- a weighted mean (FedAvg, CoMiGS's generalists, HetLoRA's zero-padded ranks, the MoE baselines):
  per update and element one multiply by the weight and one add, 2·n·numel (the normalisation of
  the weights is per update, not per element, and not counted);
- FlexLoRA (`simfed.learn.aggregate.flexlora_aggregate`), per module with B: out × k and A: k × in
  stacked over the merged devices (k = Σ r_i): the weighted B columns (out·k), a Householder QR
  with its thin Q of each factor (4·m·k² − 4k³/3 for an m × k matrix: Golub & Van Loan,
  *Matrix Computations*, §5.2: 2k²(m − k/3) to factor, as much again to form Q), the k × k core
  product (2k³), its SVD with U and V (22k³ for a square matrix, Golub–Reinsch, Golub & Van Loan
  Fig. 5.4.1), and the two products back to out × k and k × in (2·out·k² + 2·k²·in).
  The QR and SVD are LAPACK routines that run below a BLAS-3 matmul's FLOP rate; one FLOP/s for
  the server ignores that, which makes FlexLoRA's merge time a lower bound [D].
- PCL's server only relays models: 0.
"""
from __future__ import annotations

from typing import Iterable


def mean_flops(n_updates: int, numel: int) -> float:
    """A weighted mean of `n_updates` tensors sets of `numel` elements each: 2·n·numel."""
    return 2.0 * n_updates * numel


def householder_qr_flops(m: int, k: int) -> float:
    """Reduced QR of an m × k matrix with its thin Q formed: 4·m·k² − 4k³/3 (k ≤ m; else the roles swap)."""
    m, k = max(m, k), min(m, k)
    return 4.0 * m * k * k - 4.0 * k ** 3 / 3.0


def factored_svd_flops(out_dim: int, in_dim: int, k: int) -> float:
    """`low_rank_svd(B, A)` of B: out × k and A: k × in, never forming B·A (see the module doc)."""
    core = min(k, out_dim, in_dim)  # the core R_b R_aᵀ is at most this square
    return (householder_qr_flops(out_dim, k) + householder_qr_flops(in_dim, k)
            + 2.0 * core ** 3 + 22.0 * core ** 3
            + 2.0 * out_dim * core * core + 2.0 * core * core * in_dim)


def flexlora_merge_flops(mlp_modules: Iterable[tuple[int, int]], ranks: list[int], attention_numel: int) -> float:
    """FlexLoRA's merge of devices with MLP `ranks`: per MLP module (out, in) the weighted columns
    and the factored SVD at k = Σ ranks; attention, at a fixed rank, a plain weighted mean."""
    k = sum(ranks)
    total = mean_flops(len(ranks), attention_numel)
    for out_dim, in_dim in mlp_modules:
        total += out_dim * k + factored_svd_flops(out_dim, in_dim, k)
    return total
