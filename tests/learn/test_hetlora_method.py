"""HetLoRA run on the tiny model: ranks only ever drop by one a round, and pruned slices stay zero."""
from __future__ import annotations

import math

import pytest
import torch

from simfed.learn.methods.base import LocalPlan
from simfed.learn.methods.hetlora import HetLoRA, mlp_loras
from simfed.learn.spec import TrainingSpec, method_spec
from tests.learn.helpers import FLAGSHIP, LOW_END, clients_for

ROUNDS = 6


def largest(t: torch.Tensor) -> float:
    return float(t.detach().abs().max()) if t.numel() else 0.0


@pytest.fixture(scope="module")
def history(tiny_gpt2, toy_data):
    """Run HetLoRA (ranks 32 and 16, the strongest pruning weight) and record each round."""
    spec = method_spec(name="hetlora", kind="hetlora", prune_lambda=5e-2)
    training = TrainingSpec(local_steps=3, batch_size=2, seq_len=32, eval_windows=4)
    method = HetLoRA(spec, training, tiny_gpt2)
    method.setup(clients_for(toy_data, [FLAGSHIP, LOW_END]), seed=0)
    ranks = [dict(method.ranks)]
    tails = []  # per round and client: (rank trained at, max |value| in the slices from that rank on)
    uploads = []
    for r in range(ROUNDS):
        updates = []
        for c in (0, 1):
            rank = method.ranks[c]
            updates.append(method.local_update(c, method.download(c), LocalPlan(r, ROUNDS, seed=0)))
            adapters = method.fed.store.get_or_create(c).adapters
            loras = mlp_loras(adapters)  # the rank-heterogeneous (and pruned) part
            beyond = max(largest(t) for m in loras for t in (m.lora_A[:, rank:], m.lora_B[:, :, rank:]))
            tails.append((r, c, rank, beyond))
        uploads.append(updates)
        method.aggregate(updates, r)
        ranks.append(dict(method.ranks))
    return method, ranks, tails, uploads


def test_initial_ranks_follow_the_budget(history):
    _, ranks, _, _ = history
    assert ranks[0] == {0: 32, 1: 16}  # full matching of (4, 2) experts of rank 8


def test_ranks_only_go_down_by_at_most_one_a_round(history):
    _, ranks, _, _ = history
    assert ranks[1] == ranks[0], "no pruning after the first round"
    for before, after in zip(ranks, ranks[1:]):
        for c in before:
            assert after[c] in (before[c], before[c] - 1), (before, after)
    assert any(ranks[-1][c] < ranks[0][c] for c in ranks[0]), "this run is expected to prune at least once"


def test_pruned_slices_stay_exactly_zero(history):
    _, _, tails, _ = history
    for r, c, rank, beyond in tails:
        assert beyond == 0.0, f"round {r}, client {c}: slices from rank {rank} on hold {beyond}"


def test_uploads_have_the_current_rank(history):
    _, ranks, _, uploads = history
    for r, updates in enumerate(uploads):
        for u in updates:
            rank = ranks[r][u.client]
            for name, t in u.upload.items():
                expected = rank if ".mlp." in name else 8  # attention LoRA: rank 8 on every device
                assert (t.shape[0] if name.endswith("lora_A") else t.shape[1]) == expected, name


def test_attention_is_the_uniform_mean_of_the_uploads(history):
    method, _, _, uploads = history
    last = uploads[-1]
    attention = [n for n in method.fed.server if ".attn." in n]
    assert len(attention) == 2 * 2 * 2  # layers × (c_attn, c_proj) × (A, B)
    for n in attention:
        mean = (last[0].upload[n].double() + last[1].upload[n].double()) / 2
        torch.testing.assert_close(method.fed.server[n].double(), mean, rtol=1e-6, atol=1e-8)


def test_pruned_device_still_evaluates(history):
    method, _, _, _ = history
    for c in (0, 1):
        assert math.isfinite(method.evaluate(c).ppl)
