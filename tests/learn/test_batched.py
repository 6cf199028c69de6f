"""Batched devices (`executor.batch_devices`) equal the one-by-one path, for every method kind.

Four devices of unequal budgets (so CoMiGS-1GXS holds E = 1, 2, 3, 4 experts — no router, the
dense top-2 path and the grouped path in one batch — and HetLoRA/FlexLoRA ranks 4, 8, 12, 16)
train three rounds. Device 3 sits out round 0, so with local_steps 2 and τ 3 the router phases
fall at different micro-steps of the same batch (round 1: devices 0–2 after their first step,
device 3 none; round 2: devices 0–2 after their second, device 3 after its first), and devices with
fewer micro-steps drop out of the later batches. Batches of K = 3 cut the four jobs into 3 + 1.

Tolerance. Batching changes the shapes of the frozen matmuls (K·b rows instead of b), so float
sums are taken in another order and bit-identity is not expected. Each tensor must agree to
1e-5 of its norm, ‖batched − sequential‖ / ‖sequential‖ ≤ 1e-5 (fp32), after three rounds
(training, aggregation, pruning, PCL mixing); train losses to 1e-5 relative; integer state
(global steps, HetLoRA ranks) exactly.
"""
from __future__ import annotations

import pytest
import torch

from simfed.learn.methods.base import Budget, ClientInfo, LocalPlan, runs_batched, update_in_batches
from simfed.learn.methods.registry import build_method
from simfed.learn.spec import TrainingSpec, method_spec

TRAINING = TrainingSpec(local_steps=2, batch_size=2, seq_len=32, eval_windows=2)
SCORES = (0.05, 0.3, 0.6, 1.0)  # budget scores → 1GXS with min_experts 1: E = 1, 2, 3, 4
ROUNDS = [[0, 1, 2], [0, 1, 2, 3], [3, 0, 1, 2]]  # who trains in each round, in the engine's order
REL = 1e-5
ROUTED = dict(tau=3, router_steps=2)

KINDS = {
    "comigs_1g1s": dict(kind="comigs", variant="1g1s", rank=4, **ROUTED),
    "comigs_2g": dict(kind="comigs", variant="2g", rank=4, **ROUTED),
    "comigs_2s": dict(kind="comigs", variant="2s", rank=4, **ROUTED),
    "comigs_1gxs": dict(kind="comigs", variant="1gxs", rank=4, min_experts=1, max_experts=4, **ROUTED),
    "hetlora": dict(kind="hetlora", rank=4, min_experts=1, min_rank=2, prune_lambda=0.5, prune_gamma=0.5),
    "flexlora": dict(kind="flexlora", rank=4, min_experts=1, min_rank=2),
    "ffa_lora": dict(kind="ffa_lora", rank=4),
    "fedavg": dict(kind="fedavg", rank=4),
    "fedavg_single": dict(kind="fedavg", rank=4, match="none"),
    "local": dict(kind="local", rank=4),
    "pcl": dict(kind="pcl", rank=4, pcl_start=1, pcl_every=1),
    "local_moe": dict(kind="local_moe", rank=4),
    "fedavg_moe": dict(kind="fedavg_moe", rank=4),
    "pfedmoe": dict(kind="pfedmoe", rank=4),
}


def clients(data: list) -> list[ClientInfo]:
    return [ClientInfo(i, Budget(8e9 * s, 100e9 * s), data[i % len(data)]) for i, s in enumerate(SCORES)]


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    diff = float(torch.linalg.norm((got.double() - want.double()).reshape(-1)))
    scale = float(torch.linalg.norm(want.double().reshape(-1)))
    return diff / scale if scale > 0 else diff


def run(model, data, name: str, batch: int):
    """Three rounds of `KINDS[name]`; per round the updates, and the final client states."""
    method = build_method(method_spec(name=name, **KINDS[name]), TRAINING, model)
    method.setup(clients(data), seed=0)
    rounds = []
    for r, who in enumerate(ROUNDS):
        jobs = [(c, method.download(c), LocalPlan(r, len(ROUNDS), seed=0)) for c in who]
        updates = update_in_batches(method, jobs, batch)
        method.aggregate(updates, r)
        rounds.append(updates)
    states = {c: method.fed.store.peek(c) for c in range(len(SCORES))}
    return method, rounds, states


@pytest.mark.parametrize("name", list(KINDS))
def test_batched_equals_sequential(tiny_gpt2, toy_data, name):
    seq_method, seq_rounds, seq_states = run(tiny_gpt2, toy_data, name, batch=1)
    bat_method, bat_rounds, bat_states = run(tiny_gpt2, toy_data, name, batch=3)
    assert runs_batched(bat_method)
    if name == "comigs_1gxs":
        assert [bat_method.fed.shapes[c].n_experts for c in range(4)] == [1, 2, 3, 4]
    if name in ("hetlora", "flexlora"):
        assert len({bat_method.fed.shapes[c].mlp_rank for c in range(4)}) == 4  # four different ranks
    worst = 0.0
    for seq_updates, bat_updates in zip(seq_rounds, bat_rounds):
        for s, b in zip(seq_updates, bat_updates):
            assert (s.client, s.n_tokens, sorted(s.upload), s.extra) == (b.client, b.n_tokens, sorted(b.upload), b.extra)
            assert b.train_loss == pytest.approx(s.train_loss, rel=REL)
            for n in s.upload:
                worst = max(worst, rel_err(b.upload[n], s.upload[n]))
    for c, s in seq_states.items():
        b = bat_states[c]
        assert (s is None) == (b is None)
        if s is None:
            continue
        assert s.global_step == b.global_step
        want, got = s.adapters.state_dict(), b.adapters.state_dict()
        for n in want:
            worst = max(worst, rel_err(got[n], want[n]))
        for opt_s, opt_b in ((s.expert_opt, b.expert_opt), (s.router_opt, b.router_opt)):
            if opt_s is None:
                assert opt_b is None
                continue
            for (_, slot_s), (_, slot_b) in zip(opt_s.state_dict()["state"].items(), opt_b.state_dict()["state"].items()):
                assert float(slot_s["step"]) == float(slot_b["step"])  # each device's own step count
                worst = max(worst, rel_err(slot_b["exp_avg"], slot_s["exp_avg"]))
    assert worst <= REL, f"worst relative difference {worst:.2e}"
    if hasattr(seq_method, "ranks"):
        assert seq_method.ranks == bat_method.ranks


def test_the_router_phases_of_the_batch_fall_at_different_micro_steps():
    """The test's premise, worked out by hand: τ 3, two expert steps a round, router phases of 2."""
    from simfed.learn.local_update import Recipe, plan_micro_steps

    recipe = Recipe(local_steps=2, batch_size=2, seq_len=32, lr=1e-3, tau=3, router_steps=2)
    kinds = lambda g: [m.kind for m in plan_micro_steps(recipe, g, True)]  # noqa: E731
    assert kinds(0) == ["expert", "expert"]  # global step 0 → 2
    assert kinds(2) == ["expert", "router", "router", "expert"]  # the phase at global step 3
    assert kinds(4) == ["expert", "expert", "router", "router"]  # the phase at global step 6
    assert kinds(4)[:2] != kinds(2)[:2]


def test_a_subclass_overriding_local_update_alone_runs_one_by_one(tiny_gpt2, toy_data):
    from simfed.learn.methods.fedavg import FedAvg

    class Wrapped(FedAvg):
        def local_update(self, client, received, plan):
            return super().local_update(client, received, plan)

    method = Wrapped(method_spec(name="w", kind="fedavg", rank=4), TRAINING, tiny_gpt2)
    assert not runs_batched(method)
    assert runs_batched(FedAvg(method_spec(name="f", kind="fedavg", rank=4), TRAINING, tiny_gpt2))
