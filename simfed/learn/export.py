"""A device's trained model, out of the simulator: saved tensors, PEFT adapter folders, a live model.

A run with `output.save_models` keeps, per device, the model simfed measures (the method's
`local_adapters`: the device's own state, or the server's tensors over fresh private adapters)
as one safetensors file of payload-named tensors plus its `AdapterShape` in the metadata
(`save_device` / `load_device`). From such a file:

- a device with ONE expert (FedAvg, HetLoRA, FlexLoRA, FFA-LoRA, Local, PCL, Centralized) is a
  plain LoRA on the card's attention and MLP linears, written by peft itself as an adapter folder
  (`adapter_config.json` + `adapter_model.safetensors`) that `peft.PeftModel.from_pretrained`
  loads onto the base model (`write_peft_adapter`);
- a mixture device (CoMiGS, Local-/FedAvg-MoE, pFedMoE) is written as named PEFT adapters — the
  attention LoRA and one per MLP expert — plus its routers (`write_mixture`; the format is in
  MIXTURE_FORMAT below), and `attach_device` rebuilds the exact simfed model for scoring and
  generation.

Scaling: simfed's LoRA is rank-stabilised, s = alpha/√r (lora.py); peft's `use_rslora` is the
same rule. HetLoRA keeps its initial scale after self-pruning zeroes trailing rank slices, so an
adapter exported at the device's current rank r' < r carries lora_alpha = s·√r' (same s).
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from simfed.learn.adapters import AdaptedModel, AdapterShape, DeviceAdapters, copy_into
from simfed.learn.lora import rslora_scale
from simfed.learn.model_card import ModelCard

DEVICE_FILE = "device-{device}.safetensors"
MIXTURE_FORMAT = "simfed-mixture-v1"
ROUTER_FILE = "router.safetensors"
MIXTURE_FILE = "mixture.json"


@dataclass(frozen=True)
class SavedDevice:
    """One device's measured model: payload-named tensors and the structure they fill."""

    device: int
    shape: AdapterShape
    rank: int  # the LoRA rank in use (`rank_in_use`: HetLoRA's after self-pruning; otherwise the shape's)
    shared_experts: tuple[int, ...]  # MLP experts the server holds (generalists); the rest are private
    tensors: dict[str, torch.Tensor]


# ---------------------------------------------------------------- taking it out of a method

def slices_in_use(a: torch.Tensor, b: torch.Tensor) -> int:
    """The smallest k such that A's rows and B's columns from k on are all zero (at least 1)."""
    nonzero = (a.abs().sum(1) > 0) | (b.abs().sum(0) > 0)  # (r,) slices that contribute
    idx = torch.nonzero(nonzero)
    return int(idx.max()) + 1 if len(idx) else 1


def rank_in_use(tensors: dict[str, torch.Tensor]) -> int:
    """The smallest MLP rank k such that every MLP LoRA's A rows and B columns from k on are zero:
    the device's rank after HetLoRA's self-pruning (its trailing slices are kept at zero), else the
    shape's. Attention LoRA has its own fixed rank (`attn_rank`) and is not counted. Dropping
    all-zero slices leaves s·B A unchanged exactly."""
    used = 0
    for name, a in tensors.items():
        if name.endswith("lora_A") and ".attn." not in name:
            used = max(used, slices_in_use(a, tensors[name[: -len("lora_A")] + "lora_B"]))
    return max(used, 1)


def saved_device(method: Any, device: int) -> SavedDevice:
    """What simfed evaluates for `device` now, as values (copies)."""
    fed = method.fed
    adapters = fed.local_adapters(device)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in adapters.views().items()}
    shape = fed.shapes[device]
    down = fed.model.base.card.mlp.down
    shared = tuple(e for e in range(shape.n_experts) if fed.shared(f"layers.0.mlp.experts.{e}.{down}.lora_A"))
    fed.store.release(device)
    return SavedDevice(device, shape, rank_in_use(tensors), shared, tensors)


def can_save(method: Any) -> bool:
    """Methods with per-device adapters (all but Pretrained, which has nothing to keep)."""
    from simfed.learn.methods.adapter_method import AdapterMethod

    return isinstance(method, AdapterMethod) and bool(method.fed.shapes)


def save_device(saved: SavedDevice, path: Path, method_name: str) -> None:
    meta = {"device": saved.device, "method": method_name, "shape": asdict(saved.shape), "rank": saved.rank,
            "shared_experts": list(saved.shared_experts)}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(saved.tensors, str(path), metadata={"simfed": json.dumps(meta)})


def load_device(path: Path) -> SavedDevice:
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["simfed"])
        for key in f.keys():
            tensors[key] = f.get_tensor(key)
    return SavedDevice(int(meta["device"]), AdapterShape(**meta["shape"]), int(meta["rank"]),
                       tuple(meta["shared_experts"]), tensors)


# ---------------------------------------------------------------- simfed names → module paths

def module_path(card: ModelCard, payload_name: str) -> tuple[str, int | None, str]:
    """(module path in the HF model, expert index or None, 'lora_A'|'lora_B') of a payload name.

    `layers.3.attn.q_proj.lora_A` → (`model.layers.3.self_attn.q_proj`, None, 'lora_A');
    `layers.3.mlp.experts.1.up_proj.lora_B` → (`model.layers.3.mlp.up_proj`, 1, 'lora_B')."""
    parts = payload_name.split(".")
    layer, kind, which = parts[1], parts[2], parts[-1]
    if kind == "attn":
        by_leaf = {p.rsplit(".", 1)[-1]: p for p in card.attention}
        return f"{card.layers}.{layer}.{by_leaf[parts[3]]}", None, which
    return f"{card.layers}.{layer}.{card.mlp.module}.{parts[5]}", int(parts[4]), which


def lora_pairs(card: ModelCard, saved: SavedDevice, expert: int | None, attention: bool
               ) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """Module path → (A (r, in), B (out, r), scale s) of the attention LoRA (`attention`) or of
    MLP expert `expert`, truncated to the device's rank where the trailing slices are zero."""
    out: dict[str, list] = {}
    for name, tensor in saved.tensors.items():
        if name.endswith("router.weight"):
            continue
        path, e, which = module_path(card, name)
        if (e is None) != attention or (e is not None and e != expert):
            continue
        out.setdefault(path, [None, None])[0 if which == "lora_A" else 1] = tensor
    pairs = {}
    for path, (a, b) in out.items():
        scale = rslora_scale(saved.shape.alpha, a.shape[0])
        keep = a.shape[0] if attention else min(saved.rank, a.shape[0])  # attention: its own fixed rank
        if keep < a.shape[0]:
            if a[keep:].abs().max() > 0 or b[:, keep:].abs().max() > 0:
                raise RuntimeError(f"{path}: rank slices beyond the device's rank {keep} are not zero")
            a, b = a[:keep].clone(), b[:, :keep].clone()
        pairs[path] = (a, b, scale)
    return pairs


# ---------------------------------------------------------------- PEFT folders

def _lora_config(pairs: dict[str, tuple[torch.Tensor, torch.Tensor, float]], hf_model: nn.Module, base_id: str):
    """peft's LoraConfig for exactly these modules: rsLoRA, lora_alpha = s·√r per module."""
    from peft import LoraConfig
    from transformers.pytorch_utils import Conv1D

    ranks = {p: int(a.shape[0]) for p, (a, _, _) in pairs.items()}
    alphas = {p: s * math.sqrt(ranks[p]) for p, (_, _, s) in pairs.items()}
    first = next(iter(pairs))
    r, alpha = ranks[first], alphas[first]
    conv1d = isinstance(hf_model.get_submodule(first), Conv1D)  # GPT-2 stores (in, out)
    return LoraConfig(
        r=r, lora_alpha=alpha, use_rslora=True, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
        target_modules=sorted(pairs), fan_in_fan_out=conv1d, base_model_name_or_path=base_id,
        rank_pattern={p: v for p, v in ranks.items() if v != r},
        alpha_pattern={p: v for p, v in alphas.items() if not math.isclose(v, alpha)},
    )


def peft_model_of(pairs: dict[str, tuple[torch.Tensor, torch.Tensor, float]], clean_hf: nn.Module, base_id: str):
    """A peft model over a copy of `clean_hf` (the unwrapped base) holding exactly `pairs`."""
    from peft import get_peft_model

    model = copy.deepcopy(clean_hf)
    peft_model = get_peft_model(model, _lora_config(pairs, model, base_id))
    # peft takes the base's name from the model (empty for a config-built one): name it as asked
    peft_model.peft_config["default"].base_model_name_or_path = base_id
    with torch.no_grad():
        for path, (a, b, _) in pairs.items():
            layer = peft_model.base_model.model.get_submodule(path)
            layer.lora_A["default"].weight.copy_(a)
            layer.lora_B["default"].weight.copy_(b)
    return peft_model


def write_peft_adapter(card: ModelCard, saved: SavedDevice, clean_hf: nn.Module, out: Path, base_id: str,
                       merged: bool = False, tokenizer: Any = None) -> Path:
    """A single-LoRA device as a PEFT adapter folder (and, with `merged`, `out/merged/`: the base
    model with the adapter merged into its weights, a plain transformers checkpoint)."""
    if saved.shape.n_experts != 1:
        raise ValueError(f"device {saved.device} has {saved.shape.n_experts} experts: use write_mixture")
    pairs = {**lora_pairs(card, saved, None, True), **lora_pairs(card, saved, 0, False)}
    peft_model = peft_model_of(pairs, clean_hf, base_id)
    peft_model.save_pretrained(str(out))
    if merged:
        plain = peft_model.merge_and_unload()
        plain.save_pretrained(str(out / "merged"))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(out / "merged"))
    return out


def write_mixture(card: ModelCard, saved: SavedDevice, clean_hf: nn.Module, out: Path, base_id: str) -> Path:
    """A mixture device: `attention/` and `expert_<e>/` PEFT adapters, `router.safetensors`
    (`layers.<i>.router.weight`, (E, d_model)) and `mixture.json` saying how they combine."""
    n = saved.shape.n_experts
    attention = lora_pairs(card, saved, None, True)
    if attention:
        peft_model_of(attention, clean_hf, base_id).save_pretrained(str(out / "attention"))
    for e in range(n):
        peft_model_of(lora_pairs(card, saved, e, False), clean_hf, base_id).save_pretrained(str(out / f"expert_{e}"))
    routers = {k: v for k, v in saved.tensors.items() if k.endswith("router.weight")}
    save_file(routers, str(out / ROUTER_FILE))
    description = {
        "format": MIXTURE_FORMAT,
        "n_experts": n, "top_k": min(saved.shape.top_k, n), "generalists": list(saved.shared_experts),
        "adapters": (["attention"] if attention else []) + [f"expert_{e}" for e in range(n)],
        "layers": card.layers, "mlp": card.mlp.module, "mlp_up": list(card.mlp.up), "mlp_down": card.mlp.down,
        "gated": card.mlp.gated,
        "router": ("router.safetensors holds layers.<i>.router.weight (E, d_model) for decoder layer i; "
                   "the router reads the MLP's input x: logits = W x, the top_k logits are softmaxed, "
                   "the other experts get weight 0"),
        "combine": ("attention LoRA always on; the MLP output is sum_e w_e(x) * MLP_e(x), MLP_e being the "
                    "frozen MLP with expert_e's LoRA on its linears; simfed.load_device_model builds it"),
    }
    (out / MIXTURE_FILE).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return out


# ---------------------------------------------------------------- back into a model

def attach_device(model: AdaptedModel, saved: SavedDevice) -> nn.Module:
    """The HF model of `model` with the saved device's adapters attached for good: it scores and
    generates as simfed evaluated the device. The adapters are registered on the returned model
    (`simfed_adapters`) so that they live and move with it."""
    adapters: DeviceAdapters = model.new_adapters(saved.shape, torch.Generator().manual_seed(0))
    copy_into(adapters, {k: v.to(model.device) for k, v in saved.tensors.items()})
    adapters.eval()
    for p in adapters.parameters():
        p.requires_grad_(False)
    model.attach(adapters)
    model.model.simfed_adapters = adapters
    return model.model
