"""Pretrained, the joint-router MoE baselines, CoMiGS-tr and Centralized; every kind runs a round.

Upload sizes by hand for tiny-gpt2 at rank 8, per layer: attention LoRA (c_attn 8·64 + 192·8,
c_proj 8·64 + 64·8) = 3072; one MLP expert (c_fc 8·64 + 256·8, c_proj 8·256 + 64·8) = 5120.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import simfed.learn.local_update as local_update
from simfed.learn.adapters import AdapterShape
from simfed.learn.evaluate import evaluation_windows
from simfed.learn.flops import ModelDims, step_flops
from simfed.learn.methods.base import LocalPlan
from simfed.learn.methods.federation import torch_generator
from simfed.learn.methods.registry import build_method, builtin_kinds
from simfed.learn.spec import MethodSpec, TrainingSpec, method_spec
from tests.learn.conftest import adapted
from tests.learn.helpers import LOW_END, clients_for, randomise_lora_b, random_ids

TRAINING = TrainingSpec(local_steps=2, batch_size=2, seq_len=32, eval_windows=2)
ATTN, EXPERT = 3072, 5120


def one_round(model, data, spec: MethodSpec, training: TrainingSpec = TRAINING):
    method = build_method(spec, training, model)
    method.setup(clients_for(data, [LOW_END] * len(data)), seed=0)
    updates = [method.local_update(c, method.download(c), LocalPlan(0, 2, seed=0)) for c in range(len(data))]
    method.aggregate(updates, 0)
    return method, updates


# tiny-llama (2 layers, d 64, 4 heads of 16, 2 KV heads, MLP 64→128): per layer and unit of rank,
# attention LoRA q 64+64, k 64+32, v 64+32, o 64+64 = 448; one gated MLP expert 3·(64+128) = 576;
# LoRA B alone (out × r): attention 64+32+32+64 = 192, MLP 128+128+64 = 320
L_ATTN, L_EXPERT, L_B = 448, 576, 192 + 320
UPLOAD_NUMEL = {  # elements a device uploads after round 0: attention LoRA rank 8 everywhere (attn_rank),
    # MLP experts of rank 8 (match: paper; LOW_END → E = 2, so MLP rank 8·2 = 16 for HetLoRA/FlexLoRA)
    "comigs": 2 * 8 * (L_ATTN + L_EXPERT),  # 1G1S: attention + the generalist
    "hetlora": 2 * (8 * L_ATTN + 16 * L_EXPERT), "flexlora": 2 * (8 * L_ATTN + 16 * L_EXPERT),
    "fedavg": 2 * 8 * (L_ATTN + 2 * L_EXPERT),  # the matched pair of averaged experts, all shared
    "centralized": 0,  # the server trains the one model on the pooled data: devices send nothing
    "ffa_lora": 2 * (8 * 192 + 16 * 320),  # B only: attention B at rank 8, the MLP's at 2·8 = 16
    "local": 0, "pretrained": 0, "local_moe": 0,
    "pcl": 0,  # round 0 is not a collaboration round (pcl_start 4)
    "fedavg_moe": 2 * 8 * (L_ATTN + 2 * L_EXPERT), "pfedmoe": 2 * 8 * (L_ATTN + L_EXPERT),
}
# the frozen base's linears per layer: q 64·64, k 64·32, v 64·32, o 64·64, gate/up/down 3·64·128
BASE_LINEAR_PARAMS = 2 * (64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128)


@pytest.mark.parametrize("kind", sorted(builtin_kinds()))
def test_every_kind_runs_a_round_on_llama(tiny_llama, toy_data, kind):
    assert set(UPLOAD_NUMEL) == set(builtin_kinds())
    method = build_method(method_spec(name=kind, kind=kind), TRAINING, tiny_llama)
    method.setup(clients_for(toy_data, [LOW_END, LOW_END]), seed=0)
    planned = {c: method.upload_shapes(c) for c in (0, 1)}  # what the engine costs before training
    updates = [method.local_update(c, method.download(c), LocalPlan(0, 2, seed=0)) for c in (0, 1)]
    method.aggregate(updates, 0)
    # forward and input-gradient backward through every frozen linear, 2·params FLOPs a token each,
    # over 2 steps of 2 sequences of at least 31 predicted tokens: a floor no training round is under
    floor = 2 * 3 * 2 * (2 * 31) * BASE_LINEAR_PARAMS
    for c in (0, 1):
        assert math.isfinite(method.evaluate(c).ppl)
        upload = {n: tuple(t.shape) for n, t in updates[c].upload.items()}
        assert upload == planned[c]
        assert sum(t.numel() for t in updates[c].upload.values()) == UPLOAD_NUMEL[kind]
        # Pretrained trains nothing; Centralized's devices neither (the server trains the pooled model)
        assert method.round_flops(c) == 0.0 if kind in ("pretrained", "centralized") else method.round_flops(c) > floor


# --- Pretrained -------------------------------------------------------------------------------


def test_pretrained_is_the_base_model_for_free(tiny_gpt2, toy_data):
    method, updates = one_round(tiny_gpt2, toy_data, method_spec(name="pt", kind="pretrained"))
    for c in (0, 1):
        assert updates[c].upload == {} and updates[c].n_tokens == 0
        assert method.upload_shapes(c) == {} and method.download_shapes(c) == {} and method.download(c) == {}
        assert method.round_flops(c) == 0.0
        windows = torch.as_tensor(evaluation_windows(toy_data[c].test, 32, 2), dtype=torch.long)
        with torch.no_grad():
            logits = tiny_gpt2.model(input_ids=windows[:, :-1]).logits.float()  # nothing attached
        logp = F.log_softmax(logits, -1).gather(-1, windows[:, 1:, None]).squeeze(-1)
        got = method.evaluate(c)
        assert got.ppl == pytest.approx(math.exp(-float(logp.mean())), rel=1e-5)
        assert got.acc == pytest.approx(float((logits.argmax(-1) == windows[:, 1:]).float().mean()))


# --- joint-router MoE baselines --------------------------------------------------------------


@pytest.mark.parametrize("kind, numel, experts", [
    ("local_moe", 0, set()),
    ("fedavg_moe", 2 * (ATTN + 2 * EXPERT), {0, 1}),
    ("pfedmoe", 2 * (ATTN + EXPERT), {0}),
])
def test_joint_moe_shares_what_it_says(tiny_gpt2, toy_data, kind, numel, experts):
    method, updates = one_round(tiny_gpt2, toy_data, method_spec(name=kind, kind=kind))
    for c in (0, 1):
        upload = updates[c].upload
        assert sum(t.numel() for t in upload.values()) == numel
        assert not any(".router." in n for n in upload)
        assert {int(n.split(".")[4]) for n in upload if ".experts." in n} == experts
        assert method.fed.shapes[c].n_experts == 2


def test_joint_moe_trains_routers_in_the_expert_step(tiny_gpt2, toy_data, monkeypatch):
    phases = []
    planned = local_update.plan_micro_steps

    def recording(*args):
        plan = planned(*args)
        phases.extend(m for m in plan if m.kind == "router")
        return plan

    monkeypatch.setattr(local_update, "plan_micro_steps", recording)
    method = build_method(method_spec(name="p", kind="pfedmoe"), TRAINING, tiny_gpt2)
    method.setup(clients_for(toy_data, [LOW_END, LOW_END]), seed=0)
    fresh = tiny_gpt2.new_adapters(AdapterShape(2, 8, 8), torch_generator(0, 0))
    method.local_update(0, method.download(0), LocalPlan(0, 2, seed=0))
    state = method.fed.store.get_or_create(0)
    assert state.router_opt is None and phases == []  # τ = 1, yet no router phase
    stepped = {id(p) for g in state.expert_opt.param_groups for p in g["params"]}
    routers = state.adapters.router_parameters()
    assert routers and all(id(p) in stepped for p in routers)
    for got, before in zip(routers, fresh.router_parameters()):
        assert not torch.equal(got, before)  # the routers moved with the experts


def test_joint_moe_flops_match_the_flop_counter():
    model = adapted("tiny-gpt2")
    model.model.set_attn_implementation("eager")
    shape = AdapterShape(2, 8, 8)
    adapters = model.new_adapters(shape, torch.Generator().manual_seed(0))
    randomise_lora_b(adapters, seed=1)
    counter = FlopCounterMode(display=False)
    with model.using(adapters), counter:
        loss = local_update.next_token_loss(model, random_ids(2, 33, seed=2)) + 0.01 * adapters.load_balancing_loss()
        loss.backward()
    dims = ModelDims.of(model)
    predicted = step_flops(dims, shape, 2, 32) + 2 * 32 * dims.n_layers * 2 * dims.d_model * 2
    assert predicted == pytest.approx(float(counter.get_total_flops()), rel=0.10)


# --- CoMiGS-tr --------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["val", "train"])
def test_router_split_picks_the_router_batches(tiny_gpt2, toy_data, monkeypatch, split):
    seen = []  # the split each drawn batch came from, in the order of the round's steps
    draw = local_update.sample_windows
    monkeypatch.setattr(local_update, "sample_windows", lambda tokens, *a: seen.append(tokens) or draw(tokens, *a))
    spec = method_spec(name="c", kind="comigs", tau=1, router_split=split)
    method = build_method(spec, TRAINING, tiny_gpt2)
    method.setup(clients_for(toy_data, [LOW_END, LOW_END]), seed=0)
    method.local_update(1, method.download(1), LocalPlan(0, 2, seed=0))
    router = getattr(toy_data[1], split)
    phase = [router] * spec.router_steps  # τ = 1: a router phase after every expert step
    expected = [toy_data[1].train, *phase] * TRAINING.local_steps
    assert len(seen) == len(expected) and all(t is e for t, e in zip(seen, expected))
