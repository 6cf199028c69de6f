"""The server's merge FLOPs, counted by hand on tiny-llama (2 layers, d 64, MLP 64→128).

Per layer and unit of rank: attention LoRA 448 elements, one gated MLP expert 576 (see
test_baselines.py). Two LOW_END devices (E = 2): MLP rank 8·2 = 16 for HetLoRA and FlexLoRA.
"""
from __future__ import annotations

import pytest

from simfed.learn.merge_flops import factored_svd_flops, householder_qr_flops, mean_flops
from simfed.learn.methods.registry import build_method
from simfed.learn.spec import TrainingSpec, method_spec
from tests.learn.helpers import LOW_END, clients_for

TRAINING = TrainingSpec(local_steps=2, batch_size=2, seq_len=32, eval_windows=2)


def test_the_counting_rules_by_hand():
    assert mean_flops(3, 10) == 60.0  # a multiply and an add per element and update
    # QR of 6 × 2 with its thin Q: 2·2²·(6 − 2/3) to factor, as much to form Q = 85⅓
    assert householder_qr_flops(6, 2) == pytest.approx(256 / 3)
    assert householder_qr_flops(2, 6) == householder_qr_flops(6, 2)
    # B 6 × 2, A 2 × 4: QRs 256/3 and 160/3, core product 2·8 and SVD 22·8, back 2·6·4 + 2·4·4
    assert factored_svd_flops(6, 4, 2) == pytest.approx(256 / 3 + 160 / 3 + 16 + 176 + 48 + 32)


@pytest.mark.parametrize("kind, expected", [
    ("fedavg", 2 * 2 * 2 * 8 * (448 + 2 * 576)),  # 2 updates × the matched pair and attention
    ("comigs", 2 * 2 * 2 * 8 * (448 + 576)),  # attention and the generalist only
    ("hetlora", 2 * 2 * 2 * (8 * 448 + 16 * 576)),  # padded to the server's rank 16, then a mean
    # attention mean 2·2·(2·8·448) = 28,672; per layer gate and up (out 128, in 64) and down (64, 128)
    # at k = 16 + 16 = 32: QRs 4·128·32² − 4·32³/3 and 4·64·32² − 4·32³/3, core 24·32³, back
    # 2·32²·(128 + 64), weighted columns out·32: 1,882,794⅔ twice and 1,880,746⅔, 5,646,336 a layer
    ("flexlora", 28_672 + 2 * 5_646_336),
    ("pcl", 0), ("local", 0), ("pretrained", 0),
])
def test_each_kind_counts_its_own_merge(tiny_llama, toy_data, kind, expected):
    method = build_method(method_spec(name=kind, kind=kind), TRAINING, tiny_llama)
    method.setup(clients_for(toy_data, [LOW_END, LOW_END]), seed=0)
    assert method.aggregation_flops([0, 1]) == pytest.approx(expected)
