"""Fixtures of the learning tests: tiny adapted models (one per test module) and the toy corpus.

The tiny models are built from their cards' configs (random weights, byte tokenizer): no files,
no network. `AdaptedModel` installs its wrappers into the model it is given, so each test module
gets its own instance; tests attach adapters only inside `model.using(...)`.
"""
from __future__ import annotations

import pytest

from simfed.data.federated import build_federation
from simfed.data.spec import DataSpec
from simfed.learn.adapters import AdaptedModel
from simfed.learn.base_model import load_base_model
from simfed.learn.model_card import load_card


def adapted(card: str) -> AdaptedModel:
    return AdaptedModel(load_base_model(load_card(card)))


@pytest.fixture(scope="module")
def tiny_gpt2() -> AdaptedModel:
    return adapted("tiny-gpt2")


@pytest.fixture(scope="module")
def tiny_llama() -> AdaptedModel:
    return adapted("tiny-llama")


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> list:
    """Two clients, `toy:a` (arithmetic) and `toy:b` (letter runs), byte tokens, private cache."""
    from simfed.data.tokenized import ByteTokenizer

    spec = DataSpec(
        users=["toy:a", "toy:b"], train_tokens=20_000, val_tokens=4_000, test_tokens=4_000,
        cache_dir=tmp_path_factory.mktemp("toy-cache"),
    )
    return build_federation(spec, ByteTokenizer(), n_clients=2, seed=0)
