"""The grouped (top-k only) mixture against the dense one: values and gradients to 1e-6.

`MixtureMLP` has two paths (see its docstring): `dense` runs all E experts on every token,
`grouped` only the k = min(2, E) each token selects. They must be the same function with the
same gradients on both architectures (GPT-2's Conv1D MLP and Llama's gated Linear MLP), E = 1..4.
"""
from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from simfed.learn.lora import ExpertBank, permute_rows
from tests.learn.helpers import randomise_lora_b

TOL = dict(rtol=1e-6, atol=1e-6)  # float64: the two paths are the same math, so far below this


def as_double(site, bank: ExpertBank):
    """float64 copies of a site (its frozen MLP) and a bank: float32 rounding (~1e-7 relative,
    summed in different orders by the two paths) would otherwise blur a 1e-6 comparison."""
    return copy.deepcopy(site).double(), copy.deepcopy(bank).double()


def make_bank(site, n_experts: int, seed: int) -> ExpertBank:
    bank = ExpertBank(n_experts, 4, site.up_dims, site.down_dims, 64, generator=torch.Generator().manual_seed(seed))
    randomise_lora_b(bank, seed + 1, std=0.2)
    if bank.router is not None:  # a sharper router than N(0, 0.02): real, varied top-k choices
        with torch.no_grad():
            bank.router.weight.mul_(25.0)
    return bank


def forward_backward(site, bank: ExpertBank, x: torch.Tensor, probe: torch.Tensor, compute: str):
    """Output, load-balancing term and the gradients of (out·probe).sum() + LB w.r.t. x and every
    adapter tensor, on the path `compute`."""
    x = x.clone().requires_grad_(True)
    for p in bank.parameters():
        p.grad = None
    previous = site.compute
    site.compute = compute
    site.attach(bank)
    try:
        out = site(x)
        loss = (out * probe).sum()
        if bank.last_lb is not None:
            loss = loss + bank.last_lb
        loss.backward()
    finally:
        site.attach(None)
        site.compute = previous
    grads = {name: p.grad.clone() for name, p in bank.named_parameters()}
    return out.detach(), x.grad.clone(), grads


@pytest.mark.parametrize("n_experts", [1, 2, 3, 4])
@pytest.mark.parametrize("card", ["gpt2", "llama"])
def test_grouped_mixture_equals_dense_values_and_gradients(request, card, n_experts):
    model = request.getfixturevalue(f"tiny_{card}")
    site = model.mlp_sites[1]
    site, bank = as_double(site, make_bank(site, n_experts, seed=7 * n_experts))
    g = torch.Generator().manual_seed(11)
    x = torch.randn(3, 9, 64, generator=g, dtype=torch.float64)
    probe = torch.randn(3, 9, 64, generator=g, dtype=torch.float64)
    out_d, gx_d, grads_d = forward_backward(site, bank, x, probe, "dense")
    out_g, gx_g, grads_g = forward_backward(site, bank, x, probe, "grouped")
    torch.testing.assert_close(out_g, out_d, **TOL)
    torch.testing.assert_close(gx_g, gx_d, **TOL)
    assert grads_g.keys() == grads_d.keys()
    for name in grads_d:
        torch.testing.assert_close(grads_g[name], grads_d[name], **TOL, msg=lambda m: f"{name}: {m}")
    if n_experts > 2:  # the router really picks 2 of E: some expert is left out for some token
        logits = x.reshape(-1, 64) @ bank.router.weight.T
        chosen = torch.zeros_like(logits).scatter(-1, logits.topk(2, dim=-1).indices, 1.0)
        assert (chosen.sum(0) > 0).all() and (chosen == 0).any()


@pytest.mark.parametrize("card", ["gpt2", "llama"])
def test_grouped_equals_dense_in_float32_to_1e6_of_the_output_scale(request, card):
    # in the dtype simfed trains in: the paths sum the same terms in different orders, so they
    # agree to float32 rounding, i.e. within 1e-6 of the output's magnitude
    model = request.getfixturevalue(f"tiny_{card}")
    site = model.mlp_sites[1]
    bank = make_bank(site, 4, seed=3)
    g = torch.Generator().manual_seed(4)
    x, probe = torch.randn(4, 16, 64, generator=g), torch.randn(4, 16, 64, generator=g)
    out_d, gx_d, grads_d = forward_backward(site, bank, x, probe, "dense")
    out_g, gx_g, grads_g = forward_backward(site, bank, x, probe, "grouped")
    for got, want in [(out_g, out_d), (gx_g, gx_d)] + [(grads_g[n], grads_d[n]) for n in grads_d]:
        assert (got - want).abs().max() <= 1e-6 * want.abs().max()


@pytest.mark.parametrize("card", ["gpt2", "llama"])
def test_an_expert_no_token_selects_gets_zero_gradient_on_the_grouped_path(request, card):
    # E = 3 with expert 2's router row pushed far negative: no token selects it, so its LoRA
    # must get exactly zero gradient (it was never computed) while experts 0 and 1 get some
    model = request.getfixturevalue(f"tiny_{card}")
    site = model.mlp_sites[0]
    bank = make_bank(site, 3, seed=5)
    x = torch.randn(2, 6, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        bank.router.weight[2] = -100.0 * x.reshape(-1, 64).mean(0) / x.reshape(-1, 64).mean(0).norm()
        bank.router.weight[:2] = 0.0
        bank.router.weight[0, 0] = 1.0
    logits = x.reshape(-1, 64) @ bank.router.weight.T
    assert (logits.topk(2, dim=-1).indices != 2).all()
    _, _, grads = forward_backward(site, bank, x, torch.ones(2, 6, 64), "grouped")
    down_b = grads["down.lora_B"]  # (E, out, r)
    assert torch.count_nonzero(down_b[2]) == 0
    assert torch.count_nonzero(down_b[0]) > 0 and torch.count_nonzero(down_b[1]) > 0


@pytest.mark.parametrize("n_experts, grouped", [(1, False), (2, False), (3, True), (4, True)])
def test_auto_groups_exactly_when_a_router_skips_experts(tiny_llama, n_experts, grouped):
    # top-2 routing: E = 1 has no router, E = 2 selects both experts for every token (nothing to
    # skip: the dense path), E = 3, 4 skip E − 2 experts per token (the grouped path)
    site = tiny_llama.mlp_sites[0]
    assert site.compute == "auto"
    assert site.grouped_for(make_bank(site, n_experts, seed=1)) is grouped


def test_auto_groups_only_on_a_cpu_where_skipping_experts_pays(tiny_llama):
    """`expert_compute: auto`: grouped only when a router picks fewer than its E experts (E > k)
    and the bank lives on a CPU. Anywhere else (a GPU; the meta device stands in for one here, no
    GPU needed) auto runs dense, whose step has no host synchronisation; an explicit `grouped`
    is honoured everywhere, an explicit `dense` too."""
    site = tiny_llama.mlp_sites[0]

    def bank(n_experts: int, device: str) -> ExpertBank:
        return ExpertBank(n_experts, 4, site.up_dims, site.down_dims, 64, device=device)

    previous = site.compute
    try:
        site.compute = "auto"  # (the CPU cases: the test above)
        assert site.grouped_for(bank(3, "cpu")) and not site.grouped_for(bank(3, "meta"))
        site.compute = "grouped"
        assert site.grouped_for(bank(3, "meta")) and site.grouped_for(bank(2, "cpu"))
        site.compute = "dense"
        assert not site.grouped_for(bank(3, "cpu"))
        site.compute = "auto"
        with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 on a CPU: dense, fixed matmul shapes
            assert not site.grouped_for(bank(3, "cpu"))
            site.compute = "grouped"
            assert site.grouped_for(bank(3, "cpu"))
    finally:
        site.compute = previous


@pytest.mark.parametrize("card", ["gpt2", "llama"])
def test_the_grouped_blocks_run_in_fp32_under_cpu_autocast(request, card):
    """Under bf16 autocast on a CPU the grouped path's per-expert work (its blocks' shapes change
    at every step) runs in fp32: its two outputs are fp32, and they are the fp32 path's on the
    same input to bf16's rounding of the frozen W x (which stays in bf16)."""
    site = request.getfixturevalue(f"tiny_{card}").mlp_sites[0]
    bank = make_bank(site, 4, seed=3)
    x = torch.randn(2, 6, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        fp32 = site._grouped(x, bank)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = site._grouped(x, bank)
    for ours, ref in zip(mixed, fp32):
        assert ours.dtype == torch.float32
        assert torch.linalg.norm(ours - ref) <= 2e-2 * torch.linalg.norm(ref)


@settings(max_examples=30, deadline=None)
@given(n_rows=st.integers(1, 40), width=st.integers(1, 9), seed=st.integers(0, 2**31 - 1))
def test_permuting_rows_has_the_gradient_of_indexing_bit_for_bit(n_rows, width, seed):
    """`permute_rows` (the grouped path's sorts) back-propagates by a gather where autograd's
    x[order] scatter-adds; by a permutation both give every row its one gradient row exactly."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_rows, generator=g)
    inverse = torch.argsort(order)
    x = torch.randn(n_rows, width, generator=g, requires_grad=True)
    probe = torch.randn(n_rows, width, generator=g)
    (x[order] * probe).sum().backward()
    want, x.grad = x.grad, None
    got_out = permute_rows(x, order, inverse)
    (got_out * probe).sum().backward()
    assert torch.equal(got_out, x[order]) and torch.equal(x.grad, want)


def test_the_grouped_path_of_a_bf16_model_runs_under_cpu_autocast(tiny_llama):
    """A bf16 base (a card may say `dtype: bfloat16`) gives the grouped blocks bf16 inputs; they
    meet the fp32 adapters in fp32, the same function as the fp32 model's to bf16 rounding."""
    site = copy.deepcopy(tiny_llama.mlp_sites[0])
    bank = make_bank(site, 4, seed=5)
    x = torch.randn(2, 6, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        reference = site._grouped(x, bank)
        site.mlp.to(torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ours = site._grouped(x.to(torch.bfloat16), bank)
    for a, b in zip(ours, reference):
        assert torch.linalg.norm(a.float() - b) <= 3e-2 * torch.linalg.norm(b)
