"""Data-size weights on devices with unequal training splits: n_i / Σn by hand (FlexLoRA's n_i and
`aggregation_weights: tokens`), not the tokens of one round (the same for every device)."""
from __future__ import annotations

import math

import pytest
import torch

from simfed.data.federated import build_federation
from simfed.data.spec import DataSpec
from simfed.data.tokenized import ByteTokenizer
from simfed.learn.lora import LORA_ALPHA
from simfed.learn.methods.base import LocalPlan
from simfed.learn.methods.registry import build_method
from simfed.learn.spec import TrainingSpec, method_spec
from tests.learn.helpers import FLAGSHIP, LOW_END, clients_for

TRAINING = TrainingSpec(local_steps=1, batch_size=2, seq_len=32, eval_windows=2)
N0, N1 = 6_000, 18_000  # training tokens of the two devices
W0, W1 = N0 / (N0 + N1), N1 / (N0 + N1)  # 0.25, 0.75


@pytest.fixture(scope="module")
def unequal(tmp_path_factory):
    spec = DataSpec.model_validate({
        "users": [{"source": "toy:a", "train_tokens": N0}, {"source": "toy:b", "train_tokens": N1}],
        "train_tokens": 1_000, "val_tokens": 2_000, "test_tokens": 2_000,
        "cache_dir": str(tmp_path_factory.mktemp("toy-cache")),
    })
    data = build_federation(spec, ByteTokenizer(), n_clients=2, seed=0)
    assert (len(data[0].train), len(data[1].train)) == (N0, N1)
    return data


def one_round(model, data, spec, budgets):
    method = build_method(spec, TRAINING, model)
    method.setup(clients_for(data, budgets), seed=0)
    updates = [method.local_update(c, method.download(c), LocalPlan(0, 2, seed=0)) for c in (0, 1)]
    assert updates[0].n_tokens == updates[1].n_tokens  # a round's tokens: the same on both
    method.aggregate(updates, 0)
    return method, updates


@pytest.mark.parametrize("kind", ["fedavg", "comigs"])
def test_tokens_weights_are_training_split_sizes(tiny_gpt2, unequal, kind):
    spec = method_spec(name=kind, kind=kind, aggregation_weights="tokens")
    method, updates = one_round(tiny_gpt2, unequal, spec, [LOW_END, LOW_END])
    assert method.fed.client_weights(updates, "tokens") == [N0, N1]
    for name, merged in method.fed.server.items():
        expected = W0 * updates[0].upload[name].double() + W1 * updates[1].upload[name].double()
        torch.testing.assert_close(merged.double(), expected, rtol=1e-6, atol=1e-8)


def test_flexlora_weighs_each_device_by_its_training_split(tiny_gpt2, unequal):
    method, updates = one_round(tiny_gpt2, unequal, method_spec(name="flex", kind="flexlora"), [FLAGSHIP, LOW_END])
    scales = [LORA_ALPHA / math.sqrt(32), LORA_ALPHA / math.sqrt(16)]
    module = "layers.0.mlp.experts.0.c_fc"
    delta = sum(w * s * (u.upload[f"{module}.lora_B"].double() @ u.upload[f"{module}.lora_A"].double())
                for w, s, u in zip((W0, W1), scales, updates))
    server_a, server_b = method.fed.server[f"{module}.lora_A"].double(), method.fed.server[f"{module}.lora_B"].double()
    # 48 ≥ rank(ΔW): the server's rank-32 factors hold ΔW's best rank-32 approximation
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    best = u[:, :32] @ torch.diag(s[:32]) @ vh[:32]
    err = (server_b @ server_a - best).abs().max() / best.abs().max()
    assert err < 1e-5
