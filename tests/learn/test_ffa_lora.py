"""FFA-LoRA: every A stays bit-identical to the server init through training; only B moves.

Sizes by hand for tiny-gpt2 (2 layers, d_model 64, d_ff 256), attention rank 8 and — matched to
CoMiGS-1G1S as in the paper — MLP rank 16, per layer:
  A: c_attn 8·64, attn c_proj 8·64, c_fc 16·64, mlp c_proj 16·256       = 6144
  B: c_attn 192·8, attn c_proj 64·8, c_fc 256·16, mlp c_proj 64·16      = 7168
"""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from simfed.learn.adapters import AdapterShape
from simfed.learn.flops import ModelDims
from simfed.learn.local_update import next_token_loss
from simfed.learn.methods.base import LocalPlan
from simfed.learn.methods.ffa_lora import FFALoRA, frozen_a_savings
from simfed.learn.spec import TrainingSpec, method_spec
from simfed.run.payload import shapes_bytes
from tests.learn.conftest import adapted
from tests.learn.helpers import LOW_END, clients_for, randomise_lora_b, random_ids

A_NUMEL, B_NUMEL = 2 * 6144, 2 * 7168
ROUNDS = 3


@pytest.fixture(scope="module")
def history(tiny_gpt2, toy_data):
    spec = method_spec(name="ffa", kind="ffa_lora")
    training = TrainingSpec(local_steps=3, batch_size=2, seq_len=32, eval_windows=2)
    method = FFALoRA(spec, training, tiny_gpt2)
    method.setup(clients_for(toy_data, [LOW_END, LOW_END]), seed=0)
    init = {n: t.clone() for n, t in method.fed.server.items()}
    rounds = []
    for r in range(ROUNDS):
        shapes = {c: (method.download_shapes(c), method.upload_shapes(c)) for c in (0, 1)}
        received = {c: method.download(c) for c in (0, 1)}
        updates = [method.local_update(c, received[c], LocalPlan(r, ROUNDS, seed=0)) for c in (0, 1)]
        method.aggregate(updates, r)
        rounds.append((shapes, received, updates))
    return method, init, rounds


def numel(shapes) -> int:
    return sum(torch.Size(s).numel() for s in shapes.values())


def test_a_is_bit_identical_to_the_server_init_everywhere(history):
    method, init, _ = history
    a_names = [n for n in init if n.endswith("lora_A")]
    assert len(a_names) == 8
    for c in (0, 1):
        views = method.fed.store.get_or_create(c).adapters.views()
        for n in a_names:
            assert torch.equal(views[n], init[n]), n
            assert torch.equal(method.fed.server[n], init[n]), n
        for n in init:  # B did train
            if n.endswith("lora_B"):
                assert views[n].abs().sum() > 0, n


def test_uploads_hold_only_b(history):
    _, _, rounds = history
    for shapes, _, updates in rounds:
        for u in updates:
            assert u.upload and all(n.endswith(".lora_B") for n in u.upload)
            assert sum(t.numel() for t in u.upload.values()) == B_NUMEL
            assert {n: tuple(t.shape) for n, t in u.upload.items()} == shapes[u.client][1]


def test_a_is_downloaded_once_then_never(history):
    _, init, rounds = history
    for r, (shapes, received, _) in enumerate(rounds):
        for c in (0, 1):
            expected = A_NUMEL + B_NUMEL if r == 0 else B_NUMEL
            assert numel(shapes[c][0]) == expected
            assert sum(t.numel() for t in received[c].values()) == expected
            assert shapes_bytes(shapes[c][0], "float32") == 4 * expected
            assert shapes_bytes(shapes[c][1], "float16") == 2 * B_NUMEL
            if r == 0:
                for n, t in received[c].items():
                    if n.endswith("lora_A"):
                        assert torch.equal(t, init[n])


def test_server_b_is_the_mean_of_the_uploads(history):
    method, _, rounds = history
    updates = rounds[-1][2]
    for n in updates[0].upload:
        torch.testing.assert_close(method.fed.server[n], (updates[0].upload[n] + updates[1].upload[n]) / 2)


def counted_step(model, shape, freeze_a: bool) -> float:
    adapters = model.new_adapters(shape, torch.Generator().manual_seed(0))
    randomise_lora_b(adapters, seed=1)
    for n, p in adapters.named_parameters():
        p.requires_grad_(not (freeze_a and n.endswith("lora_A")))
    counter = FlopCounterMode(display=False)
    with model.using(adapters), counter:
        next_token_loss(model, random_ids(2, 33, seed=2)).backward()
    return float(counter.get_total_flops())


@pytest.mark.parametrize("card", ["tiny-gpt2", "tiny-llama"])
def test_frozen_a_savings_match_the_flop_counter(card):
    model = adapted(card)
    model.model.set_attn_implementation("eager")
    shape = AdapterShape(1, 8, 8)
    saved = counted_step(model, shape, False) - counted_step(model, shape, True)
    assert frozen_a_savings(ModelDims.of(model), shape, tokens=2 * 32) == pytest.approx(saved, rel=0.02)
