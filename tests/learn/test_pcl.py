"""PCL: the collaboration schedule, the all-to-all bytes, and mixing weights = softmax(−ppl) by hand.

The test re-evaluates every model on the device's own validation windows itself (its own copy of
the windows and of each model), forms W = exp(−ppl_j) / Σ_k exp(−ppl_k) with `math.exp`, and checks
the method's weights and the device's mixed adapters Σ_j W_j θ_j against it.
"""
from __future__ import annotations

import math

import pytest
import torch

from simfed.data.federated import UserData
from simfed.learn.adapters import copy_into
from simfed.learn.evaluate import evaluate_windows, evaluation_windows
from simfed.learn.methods.base import LocalPlan
from simfed.learn.methods.pcl import PCL, split_peers
from simfed.learn.spec import TrainingSpec, method_spec
from tests.learn.helpers import LOW_END, clients_for

TRAINING = TrainingSpec(local_steps=2, batch_size=2, seq_len=32, eval_windows=3)
# tiny-gpt2, two layers, each: attention LoRA r8 (c_attn 8·64 + 192·8, c_proj 8·64 + 64·8 = 3072) and, matched
# to 1G1S (match: paper), TWO MLP experts r8 (c_fc 8·64 + 256·8, c_proj 8·256 + 64·8 = 5120 each), no router
MODEL_NUMEL = 2 * (3072 + 2 * 5120)


def three_users(toy_data) -> list[UserData]:
    # a third device: client 0's text, its own slices (so no two models see the same validation split)
    a = toy_data[0]
    return [*toy_data, UserData("a2", a.source, a.train[::-1].copy(), a.val[::-1].copy(), a.test)]


def run_rounds(method: PCL, rounds: range, n: int, total: int):
    log = []
    for r in rounds:
        shapes = {c: (method.download_shapes(c), method.upload_shapes(c)) for c in range(n)}
        received = {c: method.download(c) for c in range(n)}
        updates = [method.local_update(c, received[c], LocalPlan(r, total, seed=0)) for c in range(n)]
        method.aggregate(updates, r)
        log.append((shapes, received, updates))
    return log


def numel(shapes) -> int:
    return sum(torch.Size(s).numel() for s in shapes.values())


def test_schedule_and_bytes_with_the_paper_defaults(tiny_gpt2, toy_data):
    """The reference mixes after local training in every epoch with `epoch > 3 and epoch % 2 == 0`:
    the models of those rounds go up, and the mix of them opens the next round."""
    users = three_users(toy_data)
    method = PCL(method_spec(name="pcl", kind="pcl"), TRAINING, tiny_gpt2)  # start 4, every 2
    method.setup(clients_for(users, [LOW_END] * 3), seed=0)
    log = run_rounds(method, range(9), 3, 9)
    reference = [r for r in range(9) if r > 3 and r % 2 == 0]  # collab_run_client_level.py's condition
    assert reference == [4, 6, 8]
    uploads_in = [r for r, (_, _, ups) in enumerate(log) if all(u.upload for u in ups)]
    downloads_in = [r for r, (shapes, _, _) in enumerate(log) if all(shapes[c][0] for c in range(3))]
    assert uploads_in == reference and downloads_in == [5, 7]  # round 8's mix would open a round 9
    for r, (shapes, received, updates) in enumerate(log):
        for c in range(3):
            down, up = shapes[c]
            assert numel(up) == (MODEL_NUMEL if r in reference else 0)
            assert numel(down) == (2 * MODEL_NUMEL if r in (5, 7) else 0)  # the N − 1 = 2 other models
            assert sum(t.numel() for t in received[c].values()) == numel(down)
            assert {n: tuple(t.shape) for n, t in updates[c].upload.items()} == up
            if r in (5, 7):
                assert sorted(split_peers(received[c])) == [j for j in range(3) if j != c]
                # what arrives is each peer's model as it was after training in round r − 1
                sent = {u.client: u.upload for u in log[r - 1][2]}
                for j, state in split_peers(received[c]).items():
                    assert all(torch.equal(t, sent[j][n]) for n, t in state.items())
    assert set(method.mixing) == {0, 1, 2} and all(m[0] == 7 for m in method.mixing.values())


@pytest.fixture(scope="module")
def after_upload_round(tiny_gpt2, toy_data):
    """Collaborate after every round from round 0: round 0 trains and uploads; the test then drives
    round 1's mix."""
    users = three_users(toy_data)
    method = PCL(method_spec(name="pcl", kind="pcl", pcl_start=0, pcl_every=1), TRAINING, tiny_gpt2)
    method.setup(clients_for(users, [LOW_END] * 3), seed=0)
    (_, _, updates), = run_rounds(method, range(1), 3, 4)
    return method, users, {u.client: u.upload for u in updates}


def test_no_shared_init(after_upload_round):
    _, _, models = after_upload_round
    name = "layers.0.attn.c_attn.lora_A"
    assert not torch.equal(models[0][name], models[1][name])


@pytest.mark.parametrize("client", [0, 1, 2])
def test_mixing_weights_are_softmax_of_minus_validation_perplexity(tiny_gpt2, after_upload_round, client):
    method, users, models = after_upload_round
    own_before = {n: t.detach().clone() for n, t in method.fed.store.get_or_create(client).adapters.views().items()}
    for n, t in own_before.items():
        assert torch.equal(t, models[client][n])  # the upload is the device's model after training
    # the test's own evaluation of every model on this device's validation windows
    windows = evaluation_windows(users[client].val, TRAINING.seq_len, TRAINING.eval_windows)
    ppl = {}
    for j, state in models.items():
        adapters = tiny_gpt2.new_adapters(method.fed.shapes[j], torch.Generator().manual_seed(99))
        copy_into(adapters, state)
        ppl[j] = evaluate_windows(tiny_gpt2, adapters, windows).ppl
    z = {j: math.exp(-p) for j, p in ppl.items()}
    expected_w = {j: z[j] / sum(z.values()) for j in z}

    method.mix(client, split_peers(method.download(client)))
    _, who, got_ppl, got_w = method.mixing[client]
    assert who == [0, 1, 2]
    assert got_ppl == pytest.approx([ppl[j] for j in who], rel=1e-9)
    assert got_w == pytest.approx([expected_w[j] for j in who], rel=1e-9, abs=1e-300)
    mixed = method.fed.store.get_or_create(client).adapters.views()
    for n in own_before:
        expected = sum(expected_w[j] * models[j][n].double() for j in models).float()
        torch.testing.assert_close(mixed[n], expected, rtol=1e-5, atol=1e-7)
    copy_into(method.fed.store.get_or_create(client).adapters, own_before)  # leave the device as it was
