"""`MixtureMLP` against an explicit loop over experts, top-k routing and the load-balancing term by hand."""
from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from simfed.learn.lora import ExpertBank
from simfed.learn.methods.comigs import generalist_coefficients
from tests.learn.helpers import randomise_lora_b


def make_bank(site, n_experts: int, rank: int, d_model: int, seed: int) -> ExpertBank:
    bank = ExpertBank(n_experts, rank, site.up_dims, site.down_dims, d_model, generator=torch.Generator().manual_seed(seed))
    randomise_lora_b(bank, seed + 1, std=0.2)
    return bank


def top2_weights(logits: torch.Tensor) -> torch.Tensor:
    """Per token: softmax over the two largest logits, 0 for the other experts (a plain loop)."""
    flat = logits.reshape(-1, logits.shape[-1])
    out = torch.zeros_like(flat)
    for t, row in enumerate(flat):
        order = sorted(range(len(row)), key=lambda j: -float(row[j]))[:2]
        z = [math.exp(float(row[j])) for j in order]
        for j, zj in zip(order, z):
            out[t, j] = zj / sum(z)
    return out.reshape(logits.shape)


def dense(w_base: torch.Tensor, delta: torch.Tensor, conv1d: bool) -> torch.Tensor:
    """The expert's full weight as an (in, out) matrix: Conv1D stores (in, out), Linear (out, in)."""
    return w_base + delta.T if conv1d else (w_base + delta).T


def explicit_gpt2(site, bank: ExpertBank, x: torch.Tensor) -> torch.Tensor:
    mlp = site.mlp
    weights = top2_weights(x @ bank.router.weight.T) if bank.router is not None else torch.ones(*x.shape[:-1], 1)
    out = torch.zeros_like(x)
    for e in range(bank.n_experts):
        w_fc = dense(mlp.c_fc.weight, bank.ups[0].delta_weight(e), conv1d=True)
        w_proj = dense(mlp.c_proj.weight, bank.down.delta_weight(e), conv1d=True)
        h = F.gelu(x @ w_fc + mlp.c_fc.bias, approximate="tanh")  # GPT-2's "gelu_new"
        out = out + weights[..., e : e + 1] * (h @ w_proj + mlp.c_proj.bias)
    return out


def explicit_llama(site, bank: ExpertBank, x: torch.Tensor) -> torch.Tensor:
    mlp = site.mlp
    weights = top2_weights(x @ bank.router.weight.T) if bank.router is not None else torch.ones(*x.shape[:-1], 1)
    out = torch.zeros_like(x)
    for e in range(bank.n_experts):
        gate = x @ dense(mlp.gate_proj.weight, bank.ups[0].delta_weight(e), conv1d=False)
        up = x @ dense(mlp.up_proj.weight, bank.ups[1].delta_weight(e), conv1d=False)
        down = dense(mlp.down_proj.weight, bank.down.delta_weight(e), conv1d=False)
        out = out + weights[..., e : e + 1] * ((F.silu(gate) * up) @ down)
    return out


@pytest.mark.parametrize("n_experts", [1, 2, 3, 4])
@pytest.mark.parametrize("card", ["gpt2", "llama"])
def test_mixture_equals_explicit_sum_over_experts(request, card, n_experts):
    model = request.getfixturevalue(f"tiny_{card}")
    site = model.mlp_sites[1]
    bank = make_bank(site, n_experts, rank=4, d_model=64, seed=10 * n_experts)
    x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        site.attach(bank)
        try:
            got = site(x)
        finally:
            site.attach(None)
        expected = (explicit_gpt2 if card == "gpt2" else explicit_llama)(site, bank, x)
        assert not torch.allclose(expected, site.mlp(x), atol=1e-3)  # the LoRA terms matter here
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_mixture_with_zero_b_is_the_frozen_mlp(tiny_llama):
    site = tiny_llama.mlp_sites[0]
    bank = ExpertBank(4, 4, site.up_dims, site.down_dims, 64, generator=torch.Generator().manual_seed(0))
    x = torch.randn(3, 7, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        site.attach(bank)
        try:
            got = site(x)
        finally:
            site.attach(None)
        torch.testing.assert_close(got, site.mlp(x), rtol=1e-5, atol=1e-6)


# --- routing and load balancing on tiny hand examples ---------------------------------------


def hand_bank(router_weight: list[list[float]]) -> ExpertBank:
    w = torch.tensor(router_weight)
    bank = ExpertBank(w.shape[0], 1, [(w.shape[1], 1)], (1, w.shape[1]), d_model=w.shape[1])
    with torch.no_grad():
        bank.router.weight.copy_(w)
    return bank


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_top2_routing_weights_by_hand():
    # 4 experts, d_model 2: token [1, 0] has logits [1, 3, 2, 0] → experts 1 and 2 with
    # e³/(e³+e²) = σ(1) and σ(−1); token [0, 1] has logits [0, -1, 5, 4] → experts 2, 3: σ(1), σ(−1)
    bank = hand_bank([[1, 0], [3, -1], [2, 5], [0, 4]])
    weights = bank.route(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
    expected = torch.tensor([[[0, sigmoid(1), sigmoid(-1), 0], [0, 0, sigmoid(1), sigmoid(-1)]]])
    torch.testing.assert_close(weights, expected)


def test_load_balancing_by_hand():
    # 3 experts, k = 2, tokens x1 = [1, 0], x2 = [0, 1], router W = [[2, 0], [1, 1], [0, 3]]
    # x1: logits [2, 1, 0] → S = {0, 1}, probs p = σ(1) on 0, 1 − p on 1
    # x2: logits [0, 1, 3] → S = {2, 1}, probs q = σ(2) on 2, 1 − q on 1
    # f = mean_x (1/k)·1[j ∈ S] = [1/4, 1/2, 1/4];  P = [p/2, (2 − p − q)/2, q/2]
    bank = hand_bank([[2, 0], [1, 1], [0, 3]])
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    p, q = sigmoid(1), sigmoid(2)
    f = [0.25, 0.5, 0.25]
    big_p = [p / 2, (2 - p - q) / 2, q / 2]

    bank.route(x)
    uniform = 3 * sum(fj * pj for fj, pj in zip(f, big_p))
    assert bank.last_lb.item() == pytest.approx(uniform, rel=1e-6)

    # generalist-favoured, imp = 0.5: c_0 = 1/(E·imp) = 2/3, c_j = (E−1)/(E(1−imp)) = 4/3
    c = [2 / 3, 4 / 3, 4 / 3]
    torch.testing.assert_close(generalist_coefficients(3), torch.tensor(c))
    bank.lb_coeff.copy_(torch.tensor(c))
    bank.route(x)
    favoured = 3 * sum(cj * fj * pj for cj, fj, pj in zip(c, f, big_p))
    assert bank.last_lb.item() == pytest.approx(favoured, rel=1e-6)


def test_generalist_coefficients_for_four_experts():
    # c_0 = 1/(4·0.5) = 0.5, c_j = 3/(4·0.5) = 1.5
    torch.testing.assert_close(generalist_coefficients(4), torch.tensor([0.5, 1.5, 1.5, 1.5]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_load_balancing_is_constant_when_e_equals_k(seed):
    # E = k = 2: every token selects both experts (f = [1/2, 1/2]) and P sums to 1 → LB = 2·½·1 = 1
    g = torch.Generator().manual_seed(seed)
    bank = ExpertBank(2, 1, [(8, 1)], (1, 8), d_model=8, generator=g)
    bank.route(torch.randn(3, 11, 8, generator=g) * 5)
    assert bank.last_lb.item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on a CPU needs a C++ compiler")
@pytest.mark.parametrize("n_experts", [2, 3])
@pytest.mark.parametrize("card", ["gpt2", "llama"])
def test_fused_mixture_equals_the_eager_one(request, card, n_experts):
    """training.fuse_mixture (MixtureMLP._fused_dense, torch.compile): the dense path's output, its
    load-balancing term and every gradient of both (LoRA, router, input) equal the eager path's to
    float rounding — the same arithmetic in fused loops. E = 3 runs dense here (compute: dense)
    so the weighted sum has three terms; GPT-2 is the plain MLP (gelu), Llama the gated one (silu)."""
    model = request.getfixturevalue(f"tiny_{card}")
    site = model.mlp_sites[1]
    bank = make_bank(site, n_experts, rank=4, d_model=64, seed=7 + n_experts)
    x0 = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(4))
    results = []
    site.attach(bank)
    compute = site.compute
    try:
        for fused in (False, True):
            site.fused, site.compute = fused, "dense"
            x = x0.clone().requires_grad_()
            out = site(x)
            weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(5))
            ((out * weights).sum() + bank.last_lb).backward()
            results.append((out.detach(), bank.last_lb.detach(), x.grad, [p.grad.clone() for p in bank.parameters()]))
            bank.zero_grad(set_to_none=True)
    finally:
        site.attach(None)
        site.fused, site.compute = False, compute
    (eager, eager_lb, eager_dx, eager_grads), (fused_out, fused_lb, fused_dx, fused_grads) = results
    assert not torch.allclose(eager, site.mlp(x0), atol=1e-3)  # the experts matter here

    def rel(got: torch.Tensor, want: torch.Tensor) -> float:  # of the whole tensor: entries near 0 round alike
        return float((got - want).norm() / want.norm())

    assert rel(fused_out, eager) <= 1e-6 and rel(fused_dx, eager_dx) <= 1e-6
    assert float(fused_lb) == pytest.approx(float(eager_lb), rel=1e-6)
    assert len(eager_grads) == len(fused_grads) > 0
    assert max(rel(got, want) for got, want in zip(fused_grads, eager_grads)) <= 1e-6


def test_the_fused_mixture_compiles_every_graph_a_gpu_run_meets(tiny_llama, monkeypatch):
    """A GPU run of CoMiGS-1GXS meets E 2, 3 and 4 experts, each in an expert step (experts need
    gradients), a router step (only the router does) and an evaluation (no gradients): 9 graphs
    of `_dense_terms`, one past dynamo's default limit of 8 compiles a function, after which it
    would run the eager code. All 9 must be compiled (dynamo's `unique_graphs` counter). Dynamo's
    own guards and cache are what is tested, so its `eager` backend stands in for inductor (no
    C++ compiler needed, no codegen time)."""
    from torch._dynamo.utils import counters

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, **{**kw, "backend": "eager"}))
    site = tiny_llama.mlp_sites[0]
    compute = site.compute
    site.__dict__.pop("_fused_dense", None)  # a compiled wrapper another test may have cached
    torch._dynamo.reset()  # no graph left over from other tests counts against the limit
    before = counters["stats"]["unique_graphs"]
    try:
        site.fused, site.compute = True, "dense"
        for n_experts in (2, 3, 4):
            bank = make_bank(site, n_experts, rank=4, d_model=64, seed=n_experts)
            site.attach(bank)
            x = torch.randn(2, 5, 64, generator=torch.Generator().manual_seed(n_experts))
            for phase in ("experts", "router"):
                for name, p in bank.named_parameters():
                    p.requires_grad_(name.startswith("router") == (phase == "router"))
                (site(x).sum() + bank.last_lb).backward()
            with torch.no_grad():
                site(x)
        assert counters["stats"]["unique_graphs"] - before == 9
    finally:
        site.attach(None)
        site.fused, site.compute = False, compute
        site.__dict__.pop("_fused_dense", None)
        torch._dynamo.reset()
