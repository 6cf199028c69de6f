"""The model card's schema: the typed fields of a card, with no lookup (simfed/learn/model_card.py
finds and loads cards; simfed/learn/architectures.py builds cards for models that have none — both
import this, so neither imports the other at module level)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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
