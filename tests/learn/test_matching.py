"""Parameter matching (`match: paper`): trainable parameters per device, counted by hand from shapes.

Per layer, Σ(in + out) over the LoRA sites (a LoRA of rank r on a site holds r·(in + out)):

    tiny-gpt2   attention  c_attn 64→192, c_proj 64→64                    A = 256 + 128 = 384
                MLP        c_fc 64→256, c_proj 256→64                     M = 320 + 320 = 640
    tiny-llama  attention  q 64→64, k 64→32, v 64→32, o 64→64 (GQA)       A = 128 + 96 + 96 + 128 = 448
                MLP        gate 64→128, up 64→128, down 128→64            M = 192 + 192 + 192 = 576

both with L = 2 layers and d_model = 64; a router of E experts holds E·64 per layer.
"""
from __future__ import annotations

import pytest

from simfed.learn.matching import device_shape, matching_rule
from simfed.learn.methods.registry import build_method
from simfed.learn.params import method_param_counts
from simfed.learn.spec import MethodSpec, TrainingSpec, method_spec
from tests.learn.helpers import FLAGSHIP, LOW_END, clients_for

TRAINING = TrainingSpec(local_steps=1, batch_size=2, seq_len=32, eval_windows=2)
L, D = 2, 64
SITES = {"tiny-gpt2": (384, 640), "tiny-llama": (448, 576)}  # (A, M) from the table above
OUT = {"tiny-gpt2": (192 + 64, 256 + 64), "tiny-llama": (64 + 32 + 32 + 64, 128 + 128 + 64)}  # Σ out: (attn, MLP)


@pytest.fixture(params=["tiny-gpt2", "tiny-llama"])
def card_model(request, tiny_gpt2, tiny_llama):
    return request.param, {"tiny-gpt2": tiny_gpt2, "tiny-llama": tiny_llama}[request.param]


def counts(model, data, spec: MethodSpec, budgets) -> dict[int, tuple[int, int]]:
    method = build_method(spec, TRAINING, model)
    method.setup(clients_for(data, budgets), seed=0)
    return {c: (p.trainable, p.held) for c, p in method_param_counts(method, len(budgets)).items()}


def by_hand_1g1s(card: str) -> int:
    a, m = SITES[card]
    return L * (8 * a + 2 * 8 * m + 2 * D)  # attention r8, two experts r8, a router of 2


@pytest.mark.parametrize("kind", ["local", "fedavg", "pcl", "centralized"])
def test_matched_baselines_carry_1g1s_lora_without_its_router(card_model, toy_data, kind):
    card, model = card_model
    a, m = SITES[card]
    expected = L * (8 * a + 2 * 8 * m)  # two averaged MLP experts of rank 8, attention rank 8, no router
    assert expected == by_hand_1g1s(card) - L * 2 * D
    got = counts(model, toy_data, method_spec(name=kind, kind=kind), [LOW_END, LOW_END])
    assert got == {0: (expected, expected), 1: (expected, expected)}
    comigs = counts(model, toy_data, method_spec(name="c", kind="comigs"), [LOW_END, LOW_END])
    assert comigs[0] == (by_hand_1g1s(card), by_hand_1g1s(card))


def test_unmatched_baselines_are_one_lora(card_model, toy_data):
    card, model = card_model
    a, m = SITES[card]
    got = counts(model, toy_data, method_spec(name="f", kind="fedavg", match="none"), [LOW_END, LOW_END])
    assert got[0] == (L * 8 * (a + m),) * 2


def test_ffa_lora_holds_the_1g1s_lora_at_mlp_rank_16_and_trains_only_b(card_model, toy_data):
    card, model = card_model
    a, m = SITES[card]
    out_attn, out_mlp = OUT[card]
    held = L * (8 * a + 16 * m)
    trainable = L * (8 * out_attn + 16 * out_mlp)  # B (out × r) only; A frozen
    got = counts(model, toy_data, method_spec(name="ffa", kind="ffa_lora"), [LOW_END, LOW_END])
    assert got[0] == (trainable, held)
    assert held == by_hand_1g1s(card) - L * 2 * D


def test_hetlora_full_32_16_16_16_against_1gxs_4_2_2_2(card_model, toy_data):
    """The paper's Table 2 matching. LoRA parameters are equal exactly (rank 8·E_i on the MLP,
    attention rank 8 on both); the difference is exactly CoMiGS's routers, L·Σ_i E_i·d = 1,280.
    Relative to the fleet: 1280/128256 = 0.998% on tiny-gpt2 (GPT-2 124M: 7680/769536 = 0.998%),
    1280/122112 = 1.048% on tiny-llama, whose MLP is narrower."""
    card, model = card_model
    a, m = SITES[card]
    data = [toy_data[0], toy_data[1], toy_data[0], toy_data[1]]
    budgets = [FLAGSHIP, LOW_END, LOW_END, LOW_END]
    het = counts(model, data, method_spec(name="h", kind="hetlora", match="full"), budgets)
    gxs = counts(model, data, method_spec(name="c", kind="comigs", variant="1gxs", max_experts=4), budgets)
    ranks, experts = [32, 16, 16, 16], [4, 2, 2, 2]
    for c in range(4):
        assert het[c] == (L * (8 * a + ranks[c] * m),) * 2
        assert gxs[c] == (L * (8 * a + experts[c] * 8 * m + experts[c] * D),) * 2
    het_total, gxs_total = sum(t for t, _ in het.values()), sum(t for t, _ in gxs.values())
    assert gxs_total - het_total == L * sum(experts) * D == 1280
    assert (gxs_total - het_total) / gxs_total == pytest.approx({"tiny-gpt2": 1280 / 128256,
                                                                "tiny-llama": 1280 / 122112}[card])
    if card == "tiny-gpt2":
        assert (gxs_total - het_total) / gxs_total < 0.01


def test_hetlora_and_flexlora_keep_attention_at_rank_8(tiny_gpt2, toy_data):
    for kind in ("hetlora", "flexlora"):
        method = build_method(method_spec(name=kind, kind=kind, rank=4), TRAINING, tiny_gpt2)
        method.setup(clients_for(toy_data, [FLAGSHIP, LOW_END]), seed=0)
        for c, mlp_rank in ((0, 16), (1, 8)):  # rank 4 × E = 4, 2
            shapes = method.download_shapes(c)
            assert shapes["layers.0.attn.c_attn.lora_A"] == (8, 64)
            assert shapes["layers.1.attn.c_proj.lora_B"] == (64, 8)
            assert shapes["layers.0.mlp.experts.0.c_fc.lora_A"] == (mlp_rank, 64)


def test_comigs_attention_rank_is_8_whatever_the_expert_rank(tiny_gpt2, toy_data):
    method = build_method(method_spec(name="c", kind="comigs", rank=4), TRAINING, tiny_gpt2)
    method.setup(clients_for(toy_data, [LOW_END, LOW_END]), seed=0)
    shapes = method.upload_shapes(0)
    assert shapes["layers.0.attn.c_attn.lora_A"] == (8, 64)
    assert shapes["layers.0.mlp.experts.0.c_fc.lora_A"] == (4, 64)


@pytest.mark.parametrize("kind, words", [
    ("fedavg", "2 MLP LoRA experts of rank 8 averaged, no router"), ("ffa_lora", "rank 16 (A frozen)"),
    ("hetlora", "paper (= full): MLP rank 8 × E"), ("comigs", "reference"),
])
def test_the_rule_is_named(kind, words):
    assert words in matching_rule(method_spec(name=kind, kind=kind))


def test_averaged_experts_have_no_router():
    shape = device_shape(method_spec(name="l", kind="local"), 0.0, 0.0)
    assert (shape.n_experts, shape.routed, shape.has_router) == (2, False, False)


def test_an_averaged_pair_is_the_mean_of_the_two_expert_mlps(card_model):
    """No router: the layer's output is ½·MLP_0(x) + ½·MLP_1(x), each MLP_e the frozen MLP with
    expert e's LoRA (computed here one expert at a time, as single-expert banks)."""
    import torch

    from simfed.learn.adapters import AdapterShape
    from tests.learn.helpers import randomise_lora_b

    _, model = card_model
    pair = model.new_adapters(AdapterShape(2, 8, 8, top_k=2, routed=False), torch.Generator().manual_seed(0))
    randomise_lora_b(pair, seed=3, std=0.2)
    singles = [model.new_adapters(AdapterShape(1, 8, 8), torch.Generator().manual_seed(1)) for _ in range(2)]
    with torch.no_grad():
        for e, single in enumerate(singles):
            for lora_pair, lora_one in zip(pair.modules(), single.modules()):
                if hasattr(lora_pair, "lora_A") and lora_pair.lora_A.shape[0] == 2:
                    lora_one.lora_A.copy_(lora_pair.lora_A[e:e + 1])
                    lora_one.lora_B.copy_(lora_pair.lora_B[e:e + 1])
    site = model.mlp_sites[0]
    x = torch.randn(2, 5, D, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        site.attach(pair.layers[0].mlp)
        mixed = site(x)
        outs = []
        for single in singles:
            site.attach(single.layers[0].mlp)
            outs.append(site(x))
        site.attach(None)
    assert pair.layers[0].mlp.router is None
    torch.testing.assert_close(mixed, 0.5 * (outs[0] + outs[1]), rtol=1e-4, atol=1e-5)  # float32 sums
