"""Centralized, checked directly: ONE model and ONE optimizer, pooled batches of N × batch_size
sequences drawn from the concatenation of every device's training split; devices do nothing."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import simfed.learn.local_update as local_update
from simfed.learn.evaluate import evaluate_windows, evaluation_windows
from simfed.learn.methods.base import LocalPlan
from simfed.learn.methods.registry import build_method
from simfed.learn.spec import TrainingSpec, method_spec
from tests.learn.helpers import LOW_END, clients_for

TRAINING = TrainingSpec(local_steps=2, batch_size=2, seq_len=32, eval_windows=2)
ROUNDS = 2


def run(model, data, monkeypatch=None, seen=None):
    if monkeypatch is not None:
        real = local_update.sample_windows

        def spy(tokens, seq_len, batch_size, rng):  # every batch the local loop draws (one a step)
            windows = real(tokens, seq_len, batch_size, rng)
            seen.append(torch.as_tensor(windows))
            return windows

        monkeypatch.setattr(local_update, "sample_windows", spy)
    method = build_method(method_spec(name="c", kind="centralized"), TRAINING, model)
    method.setup(clients_for(data, [LOW_END] * len(data)), seed=0)
    for r in range(ROUNDS):
        updates = [method.local_update(c, method.download(c), LocalPlan(r, ROUNDS, seed=0)) for c in range(len(data))]
        assert seen is None or len(seen) == r * TRAINING.local_steps  # devices' updates train nothing
        method.aggregate(updates, r)
    return method, updates


def test_one_model_one_optimizer_pooled_batches(tiny_gpt2, toy_data, monkeypatch):
    seen: list[torch.Tensor] = []
    method, updates = run(tiny_gpt2, toy_data, monkeypatch, seen)
    n, b, t = len(toy_data), TRAINING.batch_size, TRAINING.seq_len
    # one optimizer, and it stepped local_steps times a round, on every adapter tensor
    state = method.state
    assert state.router_opt is None  # match paper: two averaged experts, no router
    params = local_update.optimised(state.expert_opt)
    assert {id(p) for p in params} == {id(p) for p in state.adapters.parameters()}
    assert all(int(state.expert_opt.state[p]["step"]) == ROUNDS * TRAINING.local_steps for p in params)
    assert not hasattr(method, "fed") and len(method.pool.store) == 0  # no device holds a state of its own
    # every step one pooled batch of N × batch_size windows, each a slice of the pooled training tokens
    assert len(seen) == ROUNDS * TRAINING.local_steps
    pooled = np.concatenate([toy_data[0].train, toy_data[1].train])
    starts = np.lib.stride_tricks.sliding_window_view(pooled, t + 1)
    owners = set()
    for windows in seen:
        assert tuple(windows.shape) == (n * b, t + 1)
        for w in windows.numpy():
            at = np.flatnonzero((starts == w).all(1))
            assert at.size > 0
            owners.add(int(at[0] >= len(toy_data[0].train)))
    assert owners == {0, 1}  # batches mix both devices' data
    # the devices: no bytes, no FLOPs, empty uploads
    for c in (0, 1):
        assert updates[c].upload == {} and method.upload_shapes(c) == {} and method.download_shapes(c) == {}
        assert method.round_flops(c) == 0.0


def test_every_device_is_measured_on_the_one_model(tiny_gpt2, toy_data):
    method, _ = run(tiny_gpt2, toy_data)
    for c in (0, 1):
        windows = evaluation_windows(toy_data[c].test, TRAINING.seq_len, TRAINING.eval_windows)
        expected = evaluate_windows(tiny_gpt2, method.state.adapters, windows)
        assert method.evaluate(c).ppl == pytest.approx(expected.ppl, rel=1e-9)
        assert math.isfinite(expected.ppl)


def test_a_checkpoint_restores_the_model_and_its_optimizer(tiny_gpt2, toy_data):
    method, _ = run(tiny_gpt2, toy_data)
    saved = method.state_dict()
    again = build_method(method_spec(name="c", kind="centralized"), TRAINING, tiny_gpt2)
    again.setup(clients_for(toy_data, [LOW_END] * 2), seed=0)
    again.load_state_dict(saved)
    for m in (method, again):  # one more round each: identical
        m.aggregate([m.local_update(0, {}, LocalPlan(ROUNDS, ROUNDS + 1, seed=0))], ROUNDS)
    for (n, a), (_, b) in zip(method.state.adapters.state_dict().items(), again.state.adapters.state_dict().items()):
        assert torch.equal(a, b), n
