"""Model cards: where a base model's weights and tokenizer come from, and where adapters go.

A card is a small YAML file in `models/` (or a directory named by `$SIMFED_MODELS`). Everything
model-specific lives in the card — the module paths of the decoder layers, the attention
projections that get LoRA, the MLP's linears and activation — so the adapter code needs no
per-model branches.
"""
from __future__ import annotations

import os
from pathlib import Path


import yaml
from pydantic import ValidationError




# the schema lives in card_spec.py (architectures.py builds cards from it too); re-exported here
from simfed.learn.card_spec import (  # noqa: E402,F401
    MlpSpec, ModelCard, ModelCardError, SourceSpec, TokenizerSpec, _Strict,
)


def card_directories() -> list[Path]:
    """Where cards are looked up: `$SIMFED_MODELS`, then the repository's `models/`."""
    dirs = []
    if os.environ.get("SIMFED_MODELS"):
        dirs.append(Path(os.environ["SIMFED_MODELS"]))
    dirs.append(Path(__file__).resolve().parents[2] / "models")
    return dirs


def _card_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in card_directories():
        for f in sorted(d.glob("*.yaml")) if d.is_dir() else []:
            found.setdefault(f.stem, f)
    return found


def load_card(name: str) -> ModelCard:
    """The card called `name`; else, for a hub id or a local model directory, a card made from its
    config.model_type (simfed/learn/architectures.py); a clear one-line error otherwise."""
    files = _card_files()
    if name not in files:
        from simfed.learn.architectures import card_for_model, looks_like_model

        if looks_like_model(name):
            return card_for_model(name)
        known = ", ".join(sorted(files)) or "none"
        raise ModelCardError(
            f"unknown model card '{name}': known cards are {known} "
            f"(add models/{name}.yaml or set SIMFED_MODELS, or name a hub id or a local model directory)"
        )
    path = files[name]
    try:
        return ModelCard.model_validate(yaml.safe_load(path.read_text()))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ModelCardError(f"{path}: {where}: {first['msg']}") from None


def list_cards() -> list[ModelCard]:
    return [load_card(name) for name in sorted(_card_files())]
