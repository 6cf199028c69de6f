"""End to end on the tiny model and the toy two-domain corpus: every method trains; CoMiGS improves."""
from __future__ import annotations

import math

import pytest

from simfed.learn.methods.base import LocalPlan
from simfed.learn.methods.registry import build_method
from simfed.learn.spec import TrainingSpec, method_spec
from tests.learn.helpers import FLAGSHIP, LOW_END, clients_for

TRAINING = TrainingSpec(local_steps=10, batch_size=4, seq_len=64, eval_windows=8)


def run_rounds(method, n_clients: int, rounds: int) -> list:
    updates_per_round = []
    for r in range(rounds):
        updates = [method.local_update(c, method.download(c), LocalPlan(r, rounds, seed=0)) for c in range(n_clients)]
        method.aggregate(updates, r)
        updates_per_round.append(updates)
    return updates_per_round


def test_comigs_1g1s_lowers_each_devices_validation_perplexity(tiny_gpt2, toy_data):
    # tau = 10: a router phase (3 steps on validation batches) at the end of every round
    spec = method_spec(name="comigs", kind="comigs", variant="1g1s", tau=10, router_steps=3)
    method = build_method(spec, TRAINING, tiny_gpt2)
    method.setup(clients_for(toy_data, [LOW_END, LOW_END]), seed=0)
    before = [method.evaluate(c, "val").ppl for c in (0, 1)]
    history = run_rounds(method, 2, rounds=3)
    after = [method.evaluate(c, "val").ppl for c in (0, 1)]
    print(f"CoMiGS-1G1S val ppl before {before}, after {after}")
    for c in (0, 1):
        assert after[c] < 0.9 * before[c], (c, before[c], after[c])
    for updates in history:
        assert all(math.isfinite(u.train_loss) for u in updates)
    losses = [[u.train_loss for u in updates] for updates in history]
    assert all(losses[-1][c] < losses[0][c] for c in (0, 1)), losses
    assert all(method.fed.store.get_or_create(c).global_step == 30 for c in (0, 1))


@pytest.mark.parametrize("kind", ["fedavg", "local", "hetlora"])
def test_baselines_train_without_error(tiny_gpt2, toy_data, kind):
    training = TrainingSpec(local_steps=3, batch_size=2, seq_len=32, eval_windows=4)
    method = build_method(method_spec(name=kind, kind=kind), training, tiny_gpt2)
    method.setup(clients_for(toy_data, [FLAGSHIP, LOW_END]), seed=0)
    before = [method.evaluate(c).ppl for c in (0, 1)]
    history = run_rounds(method, 2, rounds=2)
    for updates in history:
        for u in updates:
            assert math.isfinite(u.train_loss) and u.n_tokens == 3 * 2 * 32
            if kind == "local":
                assert u.upload == {}
    after = [method.evaluate(c).ppl for c in (0, 1)]
    assert all(math.isfinite(p) for p in after)
    assert after != before  # training changed each device's model
    assert method.round_flops(0) > 0


def test_fedavg_devices_share_one_model_after_download(tiny_gpt2, toy_data):
    training = TrainingSpec(local_steps=2, batch_size=2, seq_len=32, eval_windows=4)
    method = build_method(method_spec(name="fedavg", kind="fedavg"), training, tiny_gpt2)
    method.setup(clients_for(toy_data, [LOW_END, LOW_END]), seed=0)
    (updates,) = run_rounds(method, 2, rounds=1)
    # the server now holds the uniform mean of the two uploads
    for name, merged in method.fed.server.items():
        expected = (updates[0].upload[name] + updates[1].upload[name]) / 2
        assert (merged - expected).abs().max() < 1e-6, name


def test_bf16_autocast_trains_comigs_with_fp32_weights(toy_data):
    """The GPU path's mixed precision (bf16 autocast, fp32 adapters and AdamW), exercised on CPU:
    the mixture trains, its perplexity drops, and the numbers differ from fp32 (autocast is on)."""
    import torch

    from simfed.learn.adapters import AdaptedModel
    from simfed.learn.base_model import load_base_model
    from simfed.learn.model_card import load_card

    results = {}
    for dtype in (None, torch.bfloat16):
        model = AdaptedModel(load_base_model(load_card("tiny-gpt2")), autocast=dtype)
        spec = method_spec(name="comigs", kind="comigs", variant="1g1s", tau=10, router_steps=3)
        method = build_method(spec, TRAINING, model)
        method.setup(clients_for(toy_data, [LOW_END, LOW_END]), seed=0)
        before = method.evaluate(0, "val").ppl
        run_rounds(method, 2, rounds=2)
        after = method.evaluate(0, "val").ppl
        state = method.fed.store.get_or_create(0)
        assert all(p.dtype == torch.float32 for p in state.adapters.parameters())
        assert after < 0.9 * before, (dtype, before, after)
        results[dtype] = after
    assert results[None] != results[torch.bfloat16]
