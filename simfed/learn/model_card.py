"""Model cards: where a base model's weights and tokenizer come from, and where adapters go.

A card is a small YAML file in `models/` (or a directory named by `$SIMFED_MODELS`). Everything
model-specific lives in the card — the module paths of the decoder layers, the attention
projections that get LoRA, the MLP's linears and activation — so the adapter code needs no
per-model branches.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simfed.errors import SimfedError


class ModelCardError(SimfedError):
    """An unknown or broken model card, or a base model that cannot be loaded."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSpec(_Strict):
    kind: Literal["gguf_package", "pretrained", "config"]
    package: str | None = None  # gguf_package: the Python package folder holding the file
    file: str | None = None  # gguf_package: the GGUF file name
    install_hint: str | None = None
    id: str | None = None  # pretrained: a hub id or a local directory
    path_env: str | None = None  # pretrained: an environment variable naming a local directory
    seed: int = 0  # config: seed of the random initialisation
    config: dict[str, Any] | None = None  # config: a transformers config as a dict


class MlpSpec(_Strict):
    module: str  # path of the MLP inside a decoder layer
    up: list[str]  # input-side linears (GPT-2: [c_fc]; Llama: [gate_proj, up_proj])
    down: str  # output-side linear
    gated: bool  # act(up[0](x)) * up[1](x) (Llama) or act(up[0](x)) (GPT-2)
    activation: str  # attribute of the MLP module holding its activation function
    dropout: str | None = None  # attribute of a dropout applied after `down`, if any


class TokenizerSpec(_Strict):
    kind: Literal["model", "bytes", "gpt2_files"]
    prepend_bos: bool = False
    document_separator: str | None = None


class ModelCard(_Strict):
    name: str
    description: str
    source: SourceSpec
    layers: str  # path of the ModuleList of decoder layers
    attention: list[str]  # paths (inside a layer) of the attention projections that get LoRA
    mlp: MlpSpec
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # the base model's dropout probability in training, set on EVERY dropout of the model (nn.Dropout
    # modules and attention-dropout rates alike). The paper trains with dropout 0, while transformers'
    # GPT-2 config ships 0.1: without this every card would silently train with its config's dropout.
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    tokenizer: TokenizerSpec


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
