"""FlexLoRA's server math against a dense reference: Σ_i (n_i/Σn)·s_i·B_i A_i, full SVD, truncation.

The reference here forms every ΔW as a dense float64 matrix and calls `torch.linalg.svd` on it;
the implementation never forms ΔW (QR of the stacked factors, SVD of the small core). The two must
agree to 1e-6, and each device's download must satisfy s_j·B_j A_j = U_r S_r V_rᵀ at its own r_j, s_j.
"""
from __future__ import annotations

import math

import pytest
import torch

from simfed.learn.aggregate import flexlora_aggregate, flexlora_redistribute
from simfed.learn.lora import LORA_ALPHA
from simfed.learn.methods.base import LocalPlan
from simfed.learn.methods.flexlora import FlexLoRA
from simfed.learn.spec import TrainingSpec, method_spec
from tests.learn.helpers import FLAGSHIP, LOW_END, clients_for

MODULES = {"layers.0.attn.q": (6, 10), "layers.0.mlp.experts.0.up": (12, 5)}  # name → (in, out)


def random_upload(rank: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, (d_in, d_out) in MODULES.items():
        out[f"{m}.lora_A"] = torch.randn(rank, d_in, generator=g, dtype=torch.float64)
        out[f"{m}.lora_B"] = torch.randn(d_out, rank, generator=g, dtype=torch.float64)
    return out


def dense_delta(uploads, tokens, scales, module) -> torch.Tensor:
    total = sum(tokens)
    return sum(
        (n / total) * s * (u[f"{module}.lora_B"].double() @ u[f"{module}.lora_A"].double())
        for u, n, s in zip(uploads, tokens, scales)
    )


def best_rank(delta: torch.Tensor, rank: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    return u[:, :rank] @ torch.diag(s[:rank]) @ vh[:rank]


def scale_of(rank: int) -> float:
    return LORA_ALPHA / math.sqrt(rank)


@pytest.mark.parametrize("ranks, tokens", [([4, 2, 3], [100, 300, 50]), ([2, 2], [1, 1]), ([1], [7])])
def test_aggregate_and_redistribution_equal_the_dense_reference(ranks, tokens):
    uploads = [random_upload(r, seed=i) for i, r in enumerate(ranks)]
    scales = [scale_of(r) for r in ranks]
    r_max = max(ranks)
    merged = flexlora_aggregate(uploads, tokens, scales, rank=r_max)
    for module in MODULES:
        delta = dense_delta(uploads, tokens, scales, module)
        b, a = merged[f"{module}.lora_B"], merged[f"{module}.lora_A"]
        assert a.shape[0] == b.shape[1] == r_max
        torch.testing.assert_close(b @ a, best_rank(delta, r_max), rtol=0, atol=1e-6)
        for r in range(1, r_max + 1):  # every device rank, at its own scaling
            s = scale_of(r)
            mine = flexlora_redistribute(merged, r, s)
            b_j, a_j = mine[f"{module}.lora_B"], mine[f"{module}.lora_A"]
            assert tuple(a_j.shape) == (r, MODULES[module][0]) and tuple(b_j.shape) == (MODULES[module][1], r)
            torch.testing.assert_close(s * b_j @ a_j, best_rank(delta, r), rtol=0, atol=1e-6)
            # the split is balanced: column k of B_j and row k of A_j both have norm √(σ_k / s_j)
            sigma = torch.linalg.svdvals(delta)[:r]
            torch.testing.assert_close(b_j.norm(dim=0), (sigma / s).sqrt(), rtol=0, atol=1e-6)
            torch.testing.assert_close(a_j.norm(dim=1), (sigma / s).sqrt(), rtol=0, atol=1e-6)


def test_every_device_counts_not_only_the_last():
    # the reference code keeps only the last client's term: with it, device 0 would not matter
    ups = [random_upload(2, seed=10), random_upload(2, seed=11)]
    both = flexlora_aggregate(ups, [1, 1], [1.0, 1.0], rank=2)
    changed = flexlora_aggregate([random_upload(2, seed=12), ups[1]], [1, 1], [1.0, 1.0], rank=2)
    m = "layers.0.attn.q"
    assert not torch.allclose(both[f"{m}.lora_B"] @ both[f"{m}.lora_A"], changed[f"{m}.lora_B"] @ changed[f"{m}.lora_A"])


def test_zero_padding_when_the_uploads_hold_less_rank_than_the_server():
    # one device of rank 2 reports, the server keeps rank 4: ΔW has rank 2, the last factors are zero
    merged = flexlora_aggregate([random_upload(2, seed=3)], [5], [scale_of(2)], rank=4)
    for m in MODULES:
        assert torch.count_nonzero(merged[f"{m}.lora_A"][2:]) == 0
        assert torch.count_nonzero(merged[f"{m}.lora_B"][:, 2:]) == 0


def test_method_round_matches_the_dense_reference(tiny_gpt2, toy_data):
    spec = method_spec(name="flex", kind="flexlora")
    training = TrainingSpec(local_steps=2, batch_size=2, seq_len=32, eval_windows=2)
    method = FlexLoRA(spec, training, tiny_gpt2)
    method.setup(clients_for(toy_data, [FLAGSHIP, LOW_END]), seed=0)
    assert method.ranks == {0: 32, 1: 16}
    for r in range(2):
        updates = [method.local_update(c, method.download(c), LocalPlan(r, 2, seed=0)) for c in (0, 1)]
        method.aggregate(updates, r)
    uploads = [u.upload for u in updates]
    tokens = [len(d.train) for d in toy_data]  # n_i: the training splits' sizes
    scales = [scale_of(32), scale_of(16)]
    for module in ("layers.1.mlp.experts.0.c_fc", "layers.0.mlp.experts.0.c_proj"):
        delta = dense_delta(uploads, tokens, scales, module)
        assert torch.linalg.matrix_rank(delta) == 48  # both devices' terms are in it
        for c, rank in method.ranks.items():
            got = method.download(c)
            a, b = got[f"{module}.lora_A"].double(), got[f"{module}.lora_B"].double()
            assert a.shape[0] == rank and b.shape[1] == rank
            expected = best_rank(delta, rank)
            # float32 server factors: agreement to float32 precision relative to the update's size
            err = (scales[c] * b @ a - expected).abs().max() / expected.abs().max()
            assert err < 1e-5, f"client {c} {module}: relative error {err:.2e}"
    assert method.upload_shapes(0)["layers.0.mlp.experts.0.c_fc.lora_A"] == (32, 64)
    assert method.download_shapes(1)["layers.0.mlp.experts.0.c_fc.lora_B"] == (256, 16)
    # attention: rank 8 on both devices, the uniform mean of the uploads, sent as it is
    for n in ("layers.1.attn.c_attn.lora_A", "layers.0.attn.c_proj.lora_B"):
        mean = (uploads[0][n].double() + uploads[1][n].double()) / 2
        for c in (0, 1):
            assert method.download_shapes(c)[n] == tuple(mean.shape) and 8 in mean.shape
            torch.testing.assert_close(method.download(c)[n].double(), mean, rtol=1e-6, atol=1e-8)


def test_a_device_that_never_trained_evaluates_its_share_of_the_server(tiny_gpt2, toy_data):
    method = FlexLoRA(method_spec(name="flex", kind="flexlora"), TrainingSpec(local_steps=1, batch_size=2, seq_len=32, eval_windows=2), tiny_gpt2)
    method.setup(clients_for(toy_data, [FLAGSHIP, LOW_END]), seed=0)
    method.aggregate([method.local_update(0, method.download(0), LocalPlan(0, 2, seed=0))], 0)
    held = method.fed.local_adapters(1).views()  # client 1 (rank 16) never trained
    for name, t in method.download(1).items():
        assert torch.equal(held[name], t)
    assert math.isfinite(method.evaluate(1).ppl)
