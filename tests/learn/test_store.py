"""ClientStore with a spill directory: a trained client's adapters and AdamW state survive the disk."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from simfed.learn.adapters import AdapterShape
from simfed.learn.local_update import Recipe, new_client_state, train_locally
from simfed.learn.store import ClientStore

SHAPE = AdapterShape(n_experts=2, mlp_rank=4, attn_rank=4)
# tau = 2: a router phase runs, so both optimizers hold moments
RECIPE = Recipe(local_steps=3, batch_size=2, seq_len=32, lr=2e-3, lb_lambda=0.01, tau=2, router_steps=1)


def train(model, state, data, seed: int) -> None:
    train_locally(model, state, data.train, data.val, RECIPE, lambda s: s / 10, np.random.default_rng(seed))


@pytest.fixture
def make(tiny_gpt2):
    def make(client: int):
        return new_client_state(tiny_gpt2.new_adapters(SHAPE, torch.Generator().manual_seed(100 + client)), RECIPE)

    return make


def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[tuple[int, str], torch.Tensor]:
    return {(i, k): v.clone() for i, slots in opt.state_dict()["state"].items() for k, v in slots.items()}


def test_spill_round_trips_adapters_and_optimizer_state(tiny_gpt2, toy_data, make, tmp_path):
    store = ClientStore(make, spill_dir=tmp_path)
    original = store.get_or_create(7)
    original.extra["note"] = 1.5
    train(tiny_gpt2, original, toy_data[0], seed=0)
    weights = {k: v.clone() for k, v in original.adapters.state_dict().items()}
    expert_moments, router_moments = optimizer_tensors(original.expert_opt), optimizer_tensors(original.router_opt)
    assert {k for _, k in expert_moments} == {"step", "exp_avg", "exp_avg_sq"}
    assert router_moments, "the router phase left no optimizer state"

    store.release(7)
    assert 7 in store and len(store) == 1
    assert (tmp_path / "client-7.safetensors").exists()
    restored = store.get_or_create(7)
    assert restored is not original

    got = restored.adapters.state_dict()
    assert set(got) == set(weights)
    for k in weights:
        assert torch.equal(got[k], weights[k]), k
    for opt, expected in ((restored.expert_opt, expert_moments), (restored.router_opt, router_moments)):
        state = optimizer_tensors(opt)
        assert set(state) == set(expected)
        for key in expected:
            assert torch.equal(state[key], expected[key]), key
    assert restored.global_step == original.global_step == 3
    assert restored.extra == {"note": 1.5}
    assert restored.expert_opt.param_groups[0]["lr"] == original.expert_opt.param_groups[0]["lr"]
    assert restored.expert_opt.param_groups[0]["betas"][1] == 0.95

    # the restored optimizer is bound to the restored parameters: one more round on each state,
    # same batches, gives bit-identical weights
    train(tiny_gpt2, original, toy_data[0], seed=1)
    train(tiny_gpt2, restored, toy_data[0], seed=1)
    after_o, after_r = original.adapters.state_dict(), restored.adapters.state_dict()
    for k in after_o:
        assert torch.equal(after_o[k], after_r[k]), k
    assert not torch.equal(after_o[k], weights[k])


def test_without_spill_dir_release_keeps_the_state_in_memory(make):
    store = ClientStore(make)
    state = store.get_or_create(0)
    store.release(0)
    assert store.get_or_create(0) is state


def test_never_seen_client_holds_nothing(make, tmp_path):
    store = ClientStore(make, spill_dir=tmp_path)
    assert 3 not in store and store.peek(3) is None and len(store) == 0


def test_a_memory_budget_keeps_the_most_recent_states_and_spills_the_oldest(tiny_gpt2, toy_data, make, tmp_path):
    from simfed.learn.store import state_bytes

    probe = make(0)
    train(tiny_gpt2, probe, toy_data[0], seed=0)
    one = state_bytes(probe)
    # by hand: adapters (weights) + AdamW's two moments of the same size (+ 8-byte step counters)
    params = sum(p.numel() * 4 for p in probe.adapters.parameters())
    assert 3 * params <= one <= 3 * params + 8 * 64
    store = ClientStore(make, spill_dir=tmp_path, memory_budget_bytes=int(2.5 * one))
    trained = {}
    for client in (1, 2, 3):
        state = store.get_or_create(client)
        train(tiny_gpt2, state, toy_data[0], seed=client)
        trained[client] = {k: v.clone() for k, v in state.adapters.state_dict().items()}
        store.release(client)
    assert store.in_memory == [2, 3] and (tmp_path / "client-1.safetensors").exists()
    store.get_or_create(2)  # used again: now the most recent
    store.release(2)
    assert store.in_memory == [3, 2]
    back = store.get_or_create(1)  # from disk, exactly as trained
    assert all(torch.equal(back.adapters.state_dict()[k], v) for k, v in trained[1].items())
    store.release(1)
    assert store.in_memory == [2, 1] and (tmp_path / "client-3.safetensors").exists()
