"""Bi-level updates: expert steps never move routers, router phases never move LoRA, no gradient leaks."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from simfed.learn.adapters import AdapterShape
from simfed.learn.local_update import Recipe, new_client_state, router_phase, train_locally
from tests.learn.helpers import randomise_lora_b


def snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def all_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def all_differ(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(not torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.fixture
def client(tiny_gpt2):
    recipe = Recipe(local_steps=2, batch_size=2, seq_len=32, lr=2e-3, lb_lambda=0.01, tau=1000, router_steps=2)
    adapters = tiny_gpt2.new_adapters(AdapterShape(n_experts=3, mlp_rank=4, attn_rank=4), torch.Generator().manual_seed(0))
    randomise_lora_b(adapters, seed=1)  # so that every LoRA A gets a gradient from the first step
    return new_client_state(adapters, recipe), recipe


def grads(adapters) -> list:
    return [p.grad for p in adapters.parameters()]


def test_expert_steps_leave_routers_bit_identical(tiny_gpt2, toy_data, client):
    state, recipe = client
    adapters = state.adapters
    routers, experts = snapshot(adapters.router_parameters()), snapshot(adapters.expert_parameters())
    assert len(routers) == 2  # one router per layer
    train_locally(tiny_gpt2, state, toy_data[0].train, toy_data[0].val, recipe, lambda s: 0.0, np.random.default_rng(0))
    assert state.global_step == 2  # tau = 1000: no router phase ran
    assert all_equal(routers, snapshot(adapters.router_parameters()))
    assert all_differ(experts, snapshot(adapters.expert_parameters()))
    assert all(g is None for g in grads(adapters))
    assert not state.router_opt.state  # the router optimizer never stepped


def test_router_phase_leaves_every_lora_bit_identical(tiny_gpt2, toy_data, client):
    state, recipe = client
    adapters = state.adapters
    routers, experts = snapshot(adapters.router_parameters()), snapshot(adapters.expert_parameters())
    with tiny_gpt2.using(adapters):
        loss = router_phase(tiny_gpt2, state, toy_data[0].val, recipe, np.random.default_rng(0))
    assert np.isfinite(loss)
    assert all_equal(experts, snapshot(adapters.expert_parameters()))
    assert all_differ(routers, snapshot(adapters.router_parameters()))
    assert all(g is None for g in grads(adapters))
    assert not state.expert_opt.state  # the expert optimizer never stepped


def test_alternating_round_leaves_no_gradients(tiny_gpt2, toy_data, client):
    """tau = 1: a router phase after every expert step; both groups move, no .grad survives."""
    state, _ = client
    recipe = Recipe(local_steps=2, batch_size=2, seq_len=32, lr=2e-3, lb_lambda=0.01, tau=1, router_steps=1)
    routers, experts = snapshot(state.adapters.router_parameters()), snapshot(state.adapters.expert_parameters())
    train_locally(tiny_gpt2, state, toy_data[0].train, toy_data[0].val, recipe, lambda s: 0.0, np.random.default_rng(0))
    assert all_differ(routers, snapshot(state.adapters.router_parameters()))
    assert all_differ(experts, snapshot(state.adapters.expert_parameters()))
    assert all(g is None for g in grads(state.adapters))
    assert all(not p.requires_grad for p in tiny_gpt2.model.parameters())  # the base stays frozen
    assert tiny_gpt2.attached is None  # detached again after the round
