"""Batched devices (`executor.batch_devices`) equal the one-by-one path, for every method kind.

Four devices of unequal budgets (so CoMiGS-1GXS holds E = 1, 2, 3, 4 experts — no router, the
dense top-2 path and the grouped path in one batch — and HetLoRA/FlexLoRA ranks 4, 8, 12, 16)
train three rounds. Device 3 sits out round 0, so with local_steps 2 and τ 3 the router phases
fall at different micro-steps of the same batch (round 1: devices 0–2 after their first step,
device 3 none; round 2: devices 0–2 after their second, device 3 after its first), and devices with
fewer micro-steps drop out of the later batches. Batches of K = 3 cut the four jobs into 3 + 1.

Tolerance. Batching changes the shapes of the frozen matmuls (K·b rows instead of b), so float
sums are taken in another order and bit-identity is not expected. The math itself is exact: in
float64 every tensor (uploads, adapters, AdamW moments) agrees after three rounds (training,
aggregation, pruning, PCL mixing) to 1e-10 of its norm, ‖batched − sequential‖ / ‖sequential‖
(measured ≤ 1e-15). In float32 one batched forward/backward gives every device's loss and every
gradient tensor to 1e-5 of its norm (measured ≤ 1e-6), and one round from the same states gives
each device's whole update and state (all tensors as one vector) to 1e-5 of its norm, each
single tensor to 1e-4. A single tensor can move by more than 1e-5 of its norm in one float32
round, and over several rounds more still, for a reason that is not batching: AdamW's step
lr·m/(√v + ε) for an entry whose gradient is near zero (ε = 1e-8) turns a rounding-level change
of that gradient into a visible change of the step — measured 1.4e-5 on one LoRA A of Local's
device 2 in one round, and 8e-4 on one LoRA B of FedAvg's device 3 after it received a server
model ~1e-6 different and trained ALONE (the sequential code) in round 1. Integer state (global
steps, AdamW step counts, HetLoRA ranks) is always exact.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from simfed.learn.adapters import AdapterShape
from simfed.learn.methods.base import Budget, ClientInfo, LocalPlan, runs_batched, update_in_batches
from simfed.learn.methods.registry import build_method
from simfed.learn.spec import TrainingSpec, method_spec
from tests.learn.helpers import random_ids, randomise_lora_b

TRAINING = TrainingSpec(local_steps=2, batch_size=2, seq_len=32, eval_windows=2)
SCORES = (0.05, 0.3, 0.6, 1.0)  # budget scores → 1GXS with min_experts 1: E = 1, 2, 3, 4
ROUNDS = [[0, 1, 2], [0, 1, 2, 3], [3, 0, 1, 2]]  # who trains in each round, in the engine's order
REL = {torch.float64: 1e-10, torch.float32: 1e-4}  # per tensor
WHOLE = {torch.float64: 1e-10, torch.float32: 1e-5}  # a device's whole update / state as one vector
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


def flat(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([state[n].double().reshape(-1) for n in sorted(state)])


def run(model, data, name: str, batch: int, rounds_run: list[list[int]] = ROUNDS, steps: tuple = ()):
    """`rounds_run` rounds of `KINDS[name]` (`steps`: the devices' global steps before the first);
    per round the updates, and the final client states."""
    method = build_method(method_spec(name=name, **KINDS[name]), TRAINING, model)
    method.setup(clients(data), seed=0)
    for c, g in enumerate(steps):
        method.fed.store.get_or_create(c).global_step = g
    rounds = []
    for r, who in enumerate(rounds_run):
        jobs = [(c, method.download(c), LocalPlan(r, len(ROUNDS), seed=0)) for c in who]
        updates = update_in_batches(method, jobs, batch)
        method.aggregate(updates, r)
        rounds.append(updates)
    states = {c: method.fed.store.peek(c) for c in range(len(SCORES))}
    return method, rounds, states


@pytest.fixture(scope="module")
def tiny_gpt2_f64():
    from tests.learn.conftest import adapted

    model = adapted("tiny-gpt2")
    model.model.double()
    return model


@pytest.fixture
def float64():
    """Adapters (and every tensor made without a dtype) in float64 for the test's duration."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.mark.parametrize("name", list(KINDS))
def test_batched_equals_sequential_after_three_rounds_in_float64(tiny_gpt2_f64, toy_data, float64, name):
    compare(tiny_gpt2_f64, toy_data, name, ROUNDS, (), torch.float64)


# devices at global steps 2, 4, 0, 1 before the round: with τ 3 the router phases come after
# expert step 0 (device 0), after step 1 (devices 1, 3) and never (device 2) — see the test below
@pytest.mark.parametrize("name", list(KINDS))
def test_batched_equals_sequential_in_a_float32_round(tiny_gpt2, toy_data, name):
    compare(tiny_gpt2, toy_data, name, [[0, 1, 2, 3]], (2, 4, 0, 1), torch.float32)


def compare(model, toy_data, name, rounds_run, steps, dtype) -> None:
    seq_method, seq_rounds, seq_states = run(model, toy_data, name, 1, rounds_run, steps)
    bat_method, bat_rounds, bat_states = run(model, toy_data, name, 3, rounds_run, steps)
    tolerance = REL[dtype]
    assert next(iter(seq_states[0].adapters.parameters())).dtype == dtype
    assert runs_batched(bat_method)
    if name == "comigs_1gxs":
        assert [bat_method.fed.shapes[c].n_experts for c in range(4)] == [1, 2, 3, 4]
    if name in ("hetlora", "flexlora"):
        assert len({bat_method.fed.shapes[c].mlp_rank for c in range(4)}) == 4  # four different ranks
    worst, whole = 0.0, 0.0
    for seq_updates, bat_updates in zip(seq_rounds, bat_rounds):
        for s, b in zip(seq_updates, bat_updates):
            assert (s.client, s.n_tokens, sorted(s.upload), s.extra) == (b.client, b.n_tokens, sorted(b.upload), b.extra)
            assert b.train_loss == pytest.approx(s.train_loss, rel=WHOLE[dtype])
            worst = max([worst, *(rel_err(b.upload[n], s.upload[n]) for n in s.upload)])
            if s.upload:
                whole = max(whole, rel_err(flat(b.upload), flat(s.upload)))
    for c, s in seq_states.items():
        b = bat_states[c]
        assert (s is None) == (b is None)
        if s is None:
            continue
        assert s.global_step == b.global_step
        want, got = s.adapters.state_dict(), b.adapters.state_dict()
        worst = max([worst, *(rel_err(got[n], want[n]) for n in want)])
        whole = max(whole, rel_err(flat(got), flat(want)))
        for opt_s, opt_b in ((s.expert_opt, b.expert_opt), (s.router_opt, b.router_opt)):
            if opt_s is None:
                assert opt_b is None
                continue
            for (_, slot_s), (_, slot_b) in zip(opt_s.state_dict()["state"].items(), opt_b.state_dict()["state"].items()):
                assert float(slot_s["step"]) == float(slot_b["step"])  # each device's own step count
                worst = max(worst, rel_err(slot_b["exp_avg"], slot_s["exp_avg"]))
    assert worst <= tolerance, f"worst relative difference of one tensor {worst:.2e}"
    assert whole <= WHOLE[dtype], f"worst relative difference of a whole update or state {whole:.2e}"
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
    assert kinds(1) == ["expert", "expert", "router", "router"]  # global step 1 → 3
    assert kinds(0) == ["expert", "expert"]


def test_a_subclass_overriding_local_update_alone_runs_one_by_one(tiny_gpt2, toy_data):
    from simfed.learn.methods.fedavg import FedAvg

    class Wrapped(FedAvg):
        def local_update(self, client, received, plan):
            return super().local_update(client, received, plan)

    method = Wrapped(method_spec(name="w", kind="fedavg", rank=4), TRAINING, tiny_gpt2)
    assert not runs_batched(method)
    assert runs_batched(FedAvg(method_spec(name="f", kind="fedavg", rank=4), TRAINING, tiny_gpt2))


@pytest.fixture(scope="module")
def tiny_gpt2_cuda():
    from simfed.learn.adapters import AdaptedModel
    from simfed.learn.base_model import load_base_model
    from simfed.learn.model_card import load_card

    return AdaptedModel(load_base_model(load_card("tiny-gpt2"), "cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ["comigs_1gxs", "hetlora", "ffa_lora", "pfedmoe", "pcl"])
def test_batched_equals_sequential_on_cuda(tiny_gpt2_cuda, toy_data, name):
    """The same float32 round on the GPU, TF32 off (it would round matmul inputs to 10 bits)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        compare(tiny_gpt2_cuda, toy_data, name, [[0, 1, 2, 3]], (2, 4, 0, 1), torch.float32)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


# one batch: no router (E 1), dense top-2 (E 2), grouped top-2 (E 3, 4), averaged experts, ranks
# 4 to 16, and a device without attention LoRA (rank 0: a zero pair in the stacked attention)
SHAPES = [AdapterShape(1, 4, 4), AdapterShape(2, 4, 4), AdapterShape(3, 4, 8), AdapterShape(4, 4, 4),
          AdapterShape(2, 4, 4, top_k=2, routed=False), AdapterShape(1, 16, 4), AdapterShape(1, 8, 0)]
# one MLP LoRA on every device (HetLoRA, FlexLoRA): the MLP LoRAs run stacked too (MixtureMLP._single_lora_rows)
SINGLE = [AdapterShape(1, 4, 8), AdapterShape(1, 16, 8), AdapterShape(1, 12, 0)]


@pytest.mark.parametrize("head", ["per_device", "whole"])
@pytest.mark.parametrize("shapes", [SHAPES, SINGLE], ids=["mixtures", "single_lora"])
@pytest.mark.parametrize("card", ["tiny-gpt2", "tiny-llama"])
def test_one_batched_step_gives_every_device_its_own_loss_and_gradients(request, monkeypatch, card, shapes, head):
    """Σ_k loss_k backward in one batch: each device's loss and gradients are those it gets alone,
    with the LM head run per device (`device_logits` on a plain-head model type) and with the
    whole batch's logits split (the way for any other model type)."""
    from simfed.learn import adapters as adapters_module

    if head == "whole":
        monkeypatch.setattr(adapters_module, "PLAIN_HEAD", frozenset())
    model = request.getfixturevalue(card.replace("-", "_"))
    devices = []
    for i, shape in enumerate(shapes):
        adapters = model.new_adapters(shape, torch.Generator().manual_seed(i))
        randomise_lora_b(adapters, seed=10 + i)
        devices.append(adapters)
    ids = [random_ids(2, 33, seed=20 + i) for i in range(len(shapes))]

    def objective(adapters, logits, windows):
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), windows[:, 1:].reshape(-1))
        lb = adapters.load_balancing_loss()
        return loss if lb is None else loss + 0.01 * lb

    alone = []
    for adapters, windows in zip(devices, ids):
        with model.using(adapters):
            loss = objective(adapters, model.logits(windows[:, :-1]), windows)
        loss.backward()
        alone.append((loss.item(), [p.grad.clone() for p in adapters.parameters()]))
        adapters.zero_grad(set_to_none=True)
    batch = torch.cat(ids)
    with model.using_rows(devices):
        logits = model.device_logits(batch[:, :-1], len(devices))
        losses = [objective(a, logits[k], ids[k]) for k, a in enumerate(devices)]
    torch.stack(losses).sum().backward()
    for (loss, grads), batched_loss, adapters in zip(alone, losses, devices):
        assert batched_loss.item() == pytest.approx(loss, rel=1e-6)
        for want, p in zip(grads, adapters.parameters()):
            assert rel_err(p.grad, want) <= 1e-5


def test_batched_evaluation_equals_one_by_one(tiny_gpt2, toy_data):
    """evaluate_many: devices of different shapes and window counts (3 windows: a last chunk of 1
    beside full ones) give each device's evaluate_windows numbers; one device, the same bits."""
    from simfed.learn.evaluate import evaluate_many, evaluate_windows, evaluation_windows

    devices = []
    for i, (shape, n) in enumerate(zip(SHAPES, [3, 2, 3, 2, 3, 2, 3])):
        adapters = tiny_gpt2.new_adapters(shape, torch.Generator().manual_seed(i))
        randomise_lora_b(adapters, seed=30 + i)
        devices.append((adapters, evaluation_windows(toy_data[i % 2].test, 32, n)))
    alone = [evaluate_windows(tiny_gpt2, a, w, batch_size=2) for a, w in devices]
    together = evaluate_many(tiny_gpt2, devices, batch_size=2)
    for a, t in zip(alone, together):
        assert (t.n_tokens, t.acc) == (a.n_tokens, a.acc)
        assert t.ppl == pytest.approx(a.ppl, rel=1e-6)
        assert t.ppl_se == pytest.approx(a.ppl_se, rel=1e-4)
    assert evaluate_many(tiny_gpt2, devices[:1], batch_size=2) == alone[:1]
