"""The FLOP cost model (`step_flops`) against torch's own FlopCounterMode on a real step.

On CPU, FlopCounterMode does not see the SDPA attention kernel, so each model here runs eager
attention. The counted step is the real one: forward, CE (+ λ·LB where there is a router),
backward, with only the trained group requiring gradients.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from simfed.learn.adapters import AdaptedModel, AdapterShape
from simfed.learn.flops import ModelDims, forward_flops, step_flops
from simfed.learn.local_update import next_token_loss
from tests.learn.conftest import adapted
from tests.learn.helpers import randomise_lora_b, random_ids


def counted_step(model: AdaptedModel, shape: AdapterShape, batch: int, seq_len: int, train: str) -> float:
    adapters = model.new_adapters(shape, torch.Generator().manual_seed(0))
    randomise_lora_b(adapters, seed=1)
    for p in adapters.expert_parameters():
        p.requires_grad_(train == "experts")
    for p in adapters.router_parameters():
        p.requires_grad_(train == "router")
    ids = random_ids(batch, seq_len + 1, seed=2)
    counter = FlopCounterMode(display=False)
    with model.using(adapters), counter:
        loss = next_token_loss(model, ids)
        lb = adapters.load_balancing_loss()
        if lb is not None:
            loss = loss + 0.01 * lb
        loss.backward()
    return float(counter.get_total_flops())


def counted_forward(model: AdaptedModel, shape: AdapterShape, batch: int, seq_len: int) -> float:
    adapters = model.new_adapters(shape, torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), model.using(adapters), counter:
        model.logits(random_ids(batch, seq_len, seed=2))
    return float(counter.get_total_flops())


@pytest.fixture(scope="module")
def eager_models() -> dict[str, AdaptedModel]:
    models = {}
    for card in ("tiny-gpt2", "tiny-llama"):
        m = adapted(card)
        m.model.set_attn_implementation("eager")
        models[card] = m
    return models


CASES = [(e, "experts") for e in (1, 2, 4)] + [(e, "router") for e in (2, 4)]


@pytest.mark.parametrize("n_experts, train", CASES)
@pytest.mark.parametrize("card", ["tiny-gpt2", "tiny-llama"])
def test_step_flops_match_the_flop_counter(eager_models, card, n_experts, train):
    model = eager_models[card]
    shape = AdapterShape(n_experts, mlp_rank=8, attn_rank=8)
    counted = counted_step(model, shape, batch=2, seq_len=32, train=train)
    predicted = step_flops(ModelDims.of(model), shape, batch_size=2, seq_len=32, train=train)
    assert predicted == pytest.approx(counted, rel=0.10), f"predicted {predicted:.4g}, counted {counted:.4g}"


@pytest.mark.parametrize("n_experts", [1, 2, 4])
def test_forward_flops_match_the_flop_counter(eager_models, n_experts):
    model = eager_models["tiny-llama"]
    shape = AdapterShape(n_experts, mlp_rank=8, attn_rank=8)
    counted = counted_forward(model, shape, batch=2, seq_len=32)
    predicted = forward_flops(ModelDims.of(model), shape, batch_size=2, seq_len=32)
    assert predicted == pytest.approx(counted, rel=0.10)


def test_model_dims_of_tiny_gpt2(eager_models):
    dims = ModelDims.of(eager_models["tiny-gpt2"])
    assert (dims.n_layers, dims.d_model, dims.d_attn, dims.vocab) == (2, 64, 64, 257)
    assert dims.attn_linears == ((64, 192), (64, 64))
    assert dims.mlp_up == ((64, 256),) and dims.mlp_down == (256, 64)


def test_more_experts_cost_more(eager_models):
    dims = ModelDims.of(eager_models["tiny-llama"])
    costs = [step_flops(dims, AdapterShape(e, 8, 8), 2, 32) for e in (1, 2, 3, 4)]
    assert costs == sorted(costs) and len(set(costs)) == 4


# --- top-k: a token runs only the k = 2 experts it selects ----------------------------------


def test_e4_top2_step_flops_equal_a_hand_count(eager_models):
    # tiny-llama, batch 2 × 32 (64 tokens), 2 layers, d 64, q/o 64→64, k/v 64→32 (GQA),
    # gate/up 64→128, down 128→64, vocab 257, LoRA rank 8 everywhere, E = 4, top-2.
    # Per token and layer, forward:
    attn = 2 * (64 * 64 + 64 * 32 + 64 * 32 + 64 * 64)  # frozen q, k, v, o
    scores = 4 * 32 * 64  # QK^T and the weighted sum of V over T = 32 positions, d_attn 64
    attn_lora = 2 * 8 * ((64 + 64) + (64 + 32) + (64 + 32) + (64 + 64))
    mlp = 2 * 64 * 128 * 2 + 2 * 128 * 64  # gate, up once; down once (on the mixed hidden)
    experts = 2 * (2 * 8 * ((64 + 128) * 2 + (128 + 64)))  # TWO experts' LoRA on gate, up, down
    mixing = 2 * 2 * (128 + 64)  # weighting the two selected experts' d_ff and d_model outputs
    router = 2 * 64 * 4  # the router scores all four experts
    fwd = attn + scores + attn_lora + mlp + experts + mixing + router
    # backward of an expert step: input gradients of the frozen matmuls (none for layer 0's
    # attention, whose input is the embedding), input + weight gradients of the LoRAs, twice the
    # scores and mixing, the router's input gradient only (it is frozen in an expert step)
    bwd_layer1 = attn + 2 * scores + 2 * attn_lora + mlp + 2 * experts + 2 * mixing + router
    bwd_layer0 = bwd_layer1 - attn
    head = 2 * 64 * 257  # forward; its input gradient costs the same again
    per_token = 2 * fwd + bwd_layer0 + bwd_layer1 + 2 * head
    hand = 64 * per_token
    dims = ModelDims.of(eager_models["tiny-llama"])
    assert step_flops(dims, AdapterShape(4, 8, 8), batch_size=2, seq_len=32) == hand
    # and the host does that much work: the counted step is within 1 % of the hand count
    counted = counted_step(eager_models["tiny-llama"], AdapterShape(4, 8, 8), 2, 32, "experts")
    assert counted == pytest.approx(hand, rel=0.01)


@pytest.mark.parametrize("card", ["tiny-gpt2", "tiny-llama"])
def test_e4_costs_e2_plus_only_the_extra_router_logits(eager_models, card):
    # top-2 of 4 runs as many experts a token as top-2 of 2; only the router's two extra logits
    # a layer cost more: 2·d·2 forward and the same for its input gradient, 64 tokens, 2 layers
    dims = ModelDims.of(eager_models[card])
    e2 = step_flops(dims, AdapterShape(2, 8, 8), 2, 32)
    e4 = step_flops(dims, AdapterShape(4, 8, 8), 2, 32)
    assert e4 - e2 == 64 * 2 * (2 * 64 * 2) * 2


@pytest.mark.parametrize("card, mlp_in_out", [("tiny-gpt2", (64 + 256) + (256 + 64)),
                                              ("tiny-llama", (64 + 128) * 2 + (128 + 64))])
def test_the_host_skips_the_unselected_experts(eager_models, card, mlp_in_out):
    # the dense path computes all 4 experts' MLP LoRAs on every token, the grouped one the 2
    # selected: the counted difference is two experts' LoRA work, 2·r·Σ(in+out) forward and
    # twice that backward (input and weight gradients), for 64 tokens in 2 layers
    model = eager_models[card]
    shape = AdapterShape(4, 8, 8)
    grouped = counted_step(model, shape, 2, 32, "experts")
    for site in model.mlp_sites:
        site.compute = "dense"
    try:
        dense = counted_step(model, shape, 2, 32, "experts")
    finally:
        for site in model.mlp_sites:
            site.compute = "auto"
    assert dense - grouped == 64 * 2 * 2 * (2 * 8 * mlp_in_out) * 3


def test_activation_bytes_count_the_selected_experts():
    # tiny-llama: per token and layer 6·d + 4·k·d_ff elements, k = 2 for E = 2 and E = 4, 1 for
    # E = 1; written and read back (×2) in forward, backward reads and writes gradients (×3), fp32
    from simfed.learn.flops import step_activation_bytes

    dims = ModelDims(2, 64, 64, 257, ((64, 64), (64, 32), (64, 32), (64, 64)), ((64, 128), (64, 128)), (128, 64))
    per = {e: step_activation_bytes(dims, AdapterShape(e, 8, 8), 2, 32) for e in (1, 2, 4)}
    assert per[4] == per[2] == 64 * 2 * (6 * 64 + 4 * 2 * 128) * 6 * 4
    assert per[1] == 64 * 2 * (6 * 64 + 4 * 1 * 128) * 6 * 4
