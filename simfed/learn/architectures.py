"""Any transformers causal LM without a card: where the adapters go, from `config.model_type`.

A scenario's `model:` may name a hub id or a local directory instead of a card
(`model_card.load_card` falls back to `card_for_model`). Like peft's defaults table
(`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`, which names only each type's attention
targets), `LAYOUTS` maps a model_type to module paths — here the whole layout simfed needs: the
decoder layers, every attention projection, and the MLP's input and output linears with its
activation (CoMiGS puts its experts there). A model_type not in the table is probed against every
known layout on an empty (meta-device) instance of the model; if none fits, the error names the
modules it looked for. A card remains the way to declare offline packages and overrides.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simfed.learn.card_spec import MlpSpec, ModelCard, ModelCardError, SourceSpec, TokenizerSpec


@dataclass(frozen=True)
class Layout:
    """Module paths of one family of decoder-only transformers (as a card spells them)."""

    layers: str
    attention: tuple[str, ...]
    mlp: MlpSpec

    def missing(self, model: Any) -> list[str]:
        """Paths of this layout that `model` (an instance, e.g. on the meta device) lacks."""
        try:
            layers = model.get_submodule(self.layers)
            layer = layers[0]
        except (AttributeError, IndexError, TypeError):
            return [self.layers]
        wanted = [*self.attention, self.mlp.module,
                  *(f"{self.mlp.module}.{n}" for n in [*self.mlp.up, self.mlp.down, self.mlp.activation])]
        out = []
        for path in wanted:
            try:
                layer.get_submodule(path)
            except AttributeError:
                if not _has_attribute(layer, path):
                    out.append(f"{self.layers}.0.{path}")
        return out

    def describe(self) -> str:
        return (f"{self.layers}.N.[{', '.join(self.attention)}] + {self.mlp.module}."
                f"[{', '.join([*self.mlp.up, self.mlp.down])}]")


def _has_attribute(root: Any, path: str) -> bool:
    """An activation may be a plain function attribute rather than a sub-module."""
    obj = root
    for part in path.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


LLAMA = Layout("model.layers", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
               MlpSpec(module="mlp", up=["gate_proj", "up_proj"], down="down_proj", gated=True, activation="act_fn"))
GPT2 = Layout("transformer.h", ("attn.c_attn", "attn.c_proj"),
              MlpSpec(module="mlp", up=["c_fc"], down="c_proj", gated=False, activation="act", dropout="dropout"))
GPT_NEOX = Layout("gpt_neox.layers", ("attention.query_key_value", "attention.dense"),
                  MlpSpec(module="mlp", up=["dense_h_to_4h"], down="dense_4h_to_h", gated=False, activation="act"))
PHI = Layout("model.layers", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.dense"),
             MlpSpec(module="mlp", up=["fc1"], down="fc2", gated=False, activation="activation_fn"))

# model_type → layout (transformers 5 module names; each checked by tests/learn/test_architectures.py
# for llama, qwen2, gpt2, gpt_neox — the others share those classes' layouts)
LAYOUTS: dict[str, Layout] = {
    "llama": LLAMA, "mistral": LLAMA, "qwen2": LLAMA, "qwen3": LLAMA, "gemma": LLAMA, "olmo": LLAMA,
    "gpt2": GPT2, "gpt_neox": GPT_NEOX, "phi": PHI,
}
KNOWN = (LLAMA, GPT2, GPT_NEOX, PHI)


def looks_like_model(name: str) -> bool:
    """A local directory, or a hub id `owner/name` (a card name has no slash)."""
    return Path(name).expanduser().is_dir() or re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None


def _config(name: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name)
    except (OSError, ValueError) as err:
        raise ModelCardError(f"model '{name}': no card of that name, and its transformers config cannot be read "
                             f"({str(err).splitlines()[0]}); a hub id needs a network") from None


def layout_for(name: str, config: Any) -> Layout:
    """The layout of `config.model_type`, else the known layout an empty instance of the model fits."""
    model_type = getattr(config, "model_type", None)
    if model_type in LAYOUTS:
        return LAYOUTS[model_type]
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (ValueError, KeyError) as err:
        raise ModelCardError(f"model '{name}' (model_type {model_type}): not a causal LM transformers can build "
                             f"({str(err).splitlines()[0]})") from None
    for layout in KNOWN:
        if not layout.missing(model):
            return layout
    looked = "; ".join(layout.describe() for layout in KNOWN)
    raise ModelCardError(f"model '{name}' (model_type {model_type}): simfed cannot adapt it without a card: looked "
                         f"for {looked}; write models/<name>.yaml naming its layers, attention and MLP")


def card_for_model(name: str) -> ModelCard:
    """A card made on the fly for a hub id or local directory (weights and tokenizer from it)."""
    where = str(Path(name).expanduser().resolve()) if Path(name).expanduser().is_dir() else name
    config = _config(where)
    layout = layout_for(name, config)
    return ModelCard(
        name=where,
        description=f"{name} (model_type {config.model_type}; no card: layout from simfed/learn/architectures.py)",
        source=SourceSpec(kind="pretrained", id=where),
        layers=layout.layers, attention=list(layout.attention), mlp=layout.mlp,
        dtype="float32", tokenizer=TokenizerSpec(kind="model"),
    )

