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
