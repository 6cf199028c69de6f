"""FedBuff/FedAsync's server step on hand-made tensors: server + η · Σ w_i Δ_i / Σ w_i.

Server tensor s = [1, 2]; two buffered updates with staleness 0 and 3 (weights 1 and 1/2):
  device 1 downloaded [1, 2] (the current model) and uploads [3, 2]  → Δ1 = [2, 0]
  device 2 downloaded [0, 0] (three versions ago) and uploads [0, 6] → Δ2 = [0, 6]
  Σ w Δ / Σ w = ([2, 0] + ½·[0, 6]) / 1.5 = [4/3, 2]; with η = 1: [7/3, 4]; with η = ½: [5/3, 3].
"""
from __future__ import annotations

import math

import pytest
import torch

from simfed.learn.aggregate import buffered_merge, deltas, hetlora_aggregate, hetlora_buffered_merge
from simfed.learn.methods.base import MergesAsync
from simfed.learn.methods.comigs import CoMiGS
from simfed.learn.methods.fedavg import FedAvg
from simfed.learn.methods.flexlora import FlexLoRA
from simfed.learn.methods.hetlora import HetLoRA
from simfed.learn.methods.registry import kinds_with

SERVER = {"w": torch.tensor([1.0, 2.0]), "only_server": torch.tensor([5.0])}
UPLOADS = [{"w": torch.tensor([3.0, 2.0])}, {"w": torch.tensor([0.0, 6.0])}]
BASES = [{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([0.0, 0.0])}]
W = [1.0, 1.0 / math.sqrt(1 + 3)]


def test_deltas_are_upload_minus_download():
    d = deltas(UPLOADS, BASES)
    torch.testing.assert_close(d[0]["w"], torch.tensor([2.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(d[1]["w"], torch.tensor([0.0, 6.0], dtype=torch.float64))


@pytest.mark.parametrize("lr, expected", [(1.0, [7 / 3, 4.0]), (0.5, [5 / 3, 3.0])])
def test_buffered_merge_matches_the_hand_computation(lr, expected):
    merged = buffered_merge(SERVER, deltas(UPLOADS, BASES), W, server_lr=lr)
    torch.testing.assert_close(merged["w"], torch.tensor(expected))
    assert merged["w"].dtype == torch.float32
    torch.testing.assert_close(merged["only_server"], torch.tensor([5.0]))  # carried by nobody: kept
    torch.testing.assert_close(SERVER["w"], torch.tensor([1.0, 2.0]))  # pure: the input is untouched


def test_fresh_updates_at_unit_lr_give_the_synchronous_weighted_mean():
    fresh = [{"w": torch.tensor([1.0, 2.0])}] * 2
    merged = buffered_merge(SERVER, deltas(UPLOADS, fresh), [1.0, 3.0])
    torch.testing.assert_close(merged["w"], 0.25 * UPLOADS[0]["w"] + 0.75 * UPLOADS[1]["w"])


def test_per_tensor_weights_and_carriers():
    server = {"a": torch.tensor([0.0]), "b": torch.tensor([0.0])}
    changes = [{"a": torch.tensor([1.0]), "b": torch.tensor([1.0])}, {"a": torch.tensor([4.0])}]
    merged = buffered_merge(server, changes, [{"a": 1.0, "b": 2.0}, {"a": 3.0}])
    torch.testing.assert_close(merged["a"], torch.tensor([(1 + 12) / 4]))
    torch.testing.assert_close(merged["b"], torch.tensor([1.0]))  # only device 1 carries b


# HetLoRA: the module of test_hetlora_aggregate (device 1 rank 2, device 2 rank 4; in 3, out 2)
A1 = torch.tensor([[1.0, 0, 0], [0, 1, 0]])
B1 = torch.tensor([[3.0, 0], [0, 4]])
A2 = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]])
B2 = torch.tensor([[9.0, 0, 0, 0], [0, 0, 12, 0]])


def test_hetlora_buffered_merge_pads_rank_deltas_and_multiplies_norm_and_staleness_weights():
    server = {"m.lora_A": torch.ones(4, 3), "m.lora_B": torch.ones(2, 4)}
    uploads = [{"m.lora_A": A1, "m.lora_B": B1}, {"m.lora_A": A2, "m.lora_B": B2}]
    bases = [{"m.lora_A": torch.ones(2, 3), "m.lora_B": torch.ones(2, 2)},
             {"m.lora_A": torch.zeros(4, 3), "m.lora_B": torch.zeros(2, 4)}]
    # norm weights ‖B A‖: 5 and 15 → 1/4, 3/4; staleness 0 and 3 → 1, 1/2; product 1/4, 3/8 → 2/5, 3/5
    merged = hetlora_buffered_merge(server, uploads, bases, [1.0, 0.5], max_rank=4, server_lr=1.0)
    d1_a = torch.zeros(4, 3)
    d1_a[:2] = A1 - 1
    d1_b = torch.zeros(2, 4)
    d1_b[:, :2] = B1 - 1
    torch.testing.assert_close(merged["m.lora_A"], torch.ones(4, 3) + 0.4 * d1_a + 0.6 * A2)
    torch.testing.assert_close(merged["m.lora_B"], torch.ones(2, 4) + 0.4 * d1_b + 0.6 * B2)


def test_hetlora_one_fresh_update_from_a_zero_server_is_the_synchronous_merge():
    zero = {"m.lora_A": torch.zeros(4, 3), "m.lora_B": torch.zeros(2, 4)}
    uploads = [{"m.lora_A": A1, "m.lora_B": B1}, {"m.lora_A": A2, "m.lora_B": B2}]
    bases = [{"m.lora_A": torch.zeros(2, 3), "m.lora_B": torch.zeros(2, 2)}, zero]
    merged = hetlora_buffered_merge(zero, uploads, bases, [1.0, 1.0], max_rank=4)
    expected = hetlora_aggregate(uploads, max_rank=4)
    for name in expected:
        torch.testing.assert_close(merged[name], expected[name])


def test_the_async_kinds_are_the_classes_that_declare_merges_async():
    assert set(kinds_with(MergesAsync)) == {"comigs", "fedavg", "hetlora"}  # the methods ALGORITHMS.md gives a buffered merge
    for cls in (CoMiGS, FedAvg, HetLoRA):
        assert issubclass(cls, MergesAsync)
    assert not issubclass(FlexLoRA, MergesAsync) and not hasattr(FlexLoRA, "aggregate_async")
