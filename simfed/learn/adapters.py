"""Injecting adapters into a Hugging Face causal LM, by module name from the model card.

`AdaptedModel` installs the wrappers of `lora.py` into ONE frozen base model, once. A device's
adapters (`DeviceAdapters`) are created from an `AdapterShape` and attached for the time the
device trains or is evaluated. Payloads — what travels between device and server — are flat
dicts of tensors under stable names (peft's `get_peft_model_state_dict` idea):

    layers.3.attn.q_proj.lora_A                (r, in)
    layers.3.mlp.experts.0.up_proj.lora_B      (out, r)   expert 0 is the generalist
    layers.3.mlp.router.weight                 (E, d_model)
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from simfed.learn.base_model import BaseModel
from simfed.learn.cpu_attention import use_fp32_cpu_attention
from simfed.learn.frozen_casts import FrozenCasts
from simfed.learn.lora import (
    LORA_ALPHA, BankRows, ExpertBank, ExpertCompute, LoRALinear, LoRARows, MixtureMLP, StackedLoRA,
)
from simfed.learn.model_card import ModelCardError


# model types whose causal LM computes its logits as lm_head(last hidden state) and nothing more
# (no scaling, no soft-capping; read in transformers 5's modeling files): `device_logits` may run
# the head per device on these
PLAIN_HEAD = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "olmo", "gpt2", "gpt_neox", "phi"})


@dataclass(frozen=True)
class AdapterShape:
    """The trainable structure of one device."""

    n_experts: int  # MLP experts; 1 = a plain LoRA on the MLP, no router
    mlp_rank: int  # rank of every expert's LoRA
    attn_rank: int  # rank of the attention LoRA (0 = none)
    top_k: int = 2
    alpha: float = LORA_ALPHA
    # False: no router, the E experts' outputs averaged with weight 1/E (the reference's `is_no_router`):
    # the paper's parameter-matched Local/FedAvg/PCL/Centralized carry two MLP experts this way
    routed: bool = True

    @property
    def has_router(self) -> bool:
        return self.n_experts > 1 and self.routed


def _get(root: nn.Module, path: str, what: str) -> nn.Module:
    module = root
    for part in path.split("."):
        if not hasattr(module, part):
            children = ", ".join(name for name, _ in module.named_children()) or "none"
            raise ModelCardError(
                f"target module '{path}' ({what}) does not exist in the model: "
                f"'{part}' is not among [{children}]; fix the model card"
            )
        module = getattr(module, part)
    return module


def _set(root: nn.Module, path: str, value: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = _get(root, parent_path, "parent") if parent_path else root
    setattr(parent, name, value)


class LayerAdapters(nn.Module):
    def __init__(self, attn: dict[str, StackedLoRA], mlp: ExpertBank) -> None:
        super().__init__()
        self.attn = nn.ModuleDict(attn)
        self.mlp = mlp


class DeviceAdapters(nn.Module):
    """All trainable tensors of one device: per layer, attention LoRA and the MLP expert bank."""

    def __init__(self, shape: AdapterShape, layers: list[LayerAdapters], up_names: list[str], down_name: str):
        super().__init__()
        self.shape = shape
        self.layers = nn.ModuleList(layers)
        self.up_names = up_names
        self.down_name = down_name

    def views(self) -> dict[str, torch.Tensor]:
        """Every addressable tensor under its payload name, as a view sharing the parameter's storage."""
        out: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            for name, lora in layer.attn.items():
                out[f"layers.{i}.attn.{name}.lora_A"] = lora.lora_A.data[0]
                out[f"layers.{i}.attn.{name}.lora_B"] = lora.lora_B.data[0]
            bank: ExpertBank = layer.mlp
            linears = list(zip(self.up_names, bank.ups)) + [(self.down_name, bank.down)]
            for e in range(bank.n_experts):
                for name, lora in linears:
                    out[f"layers.{i}.mlp.experts.{e}.{name}.lora_A"] = lora.lora_A.data[e]
                    out[f"layers.{i}.mlp.experts.{e}.{name}.lora_B"] = lora.lora_B.data[e]
            if bank.router is not None:
                out[f"layers.{i}.mlp.router.weight"] = bank.router.weight.data
        return out

    def expert_parameters(self) -> list[nn.Parameter]:
        """LoRA tensors (attention and MLP experts): what the expert optimizer trains."""
        return [p for n, p in self.named_parameters() if "router" not in n]

    def router_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if "router" in n]

    def banks(self) -> list[ExpertBank]:
        return [layer.mlp for layer in self.layers]

    def load_balancing_loss(self) -> torch.Tensor | None:
        """Mean over layers of the last forward's load-balancing term (None without routers)."""
        terms = [b.last_lb for b in self.banks() if b.last_lb is not None]
        return torch.stack(terms).mean() if terms else None


def copy_into(adapters: DeviceAdapters, payload: dict[str, torch.Tensor]) -> None:
    """Write payload tensors into the device's parameters in place (shapes must match)."""
    views = adapters.views()
    with torch.no_grad():
        for name, tensor in payload.items():
            if name not in views:
                raise KeyError(f"payload tensor '{name}' has no place in this device's adapters")
            view = views[name]
            if view.shape != tensor.shape:
                raise ValueError(f"payload tensor '{name}': shape {tuple(tensor.shape)} != {tuple(view.shape)}")
            view.copy_(tensor.to(view.dtype))


class AdaptedModel:
    """The frozen base model with LoRA wrappers installed; devices' adapters attach to it."""

    def __init__(self, base: BaseModel, autocast: torch.dtype | None = None,
                 expert_compute: ExpertCompute = "auto", fuse_mixture: bool = False) -> None:
        self.base = base
        # the frozen linear weights cast to the autocast dtype once, not at every matmul
        self.frozen_casts = FrozenCasts(base.model)
        # mixed precision for every forward/backward with adapters attached (training, routers,
        # evaluation): matmuls in `autocast` (bf16 on a GPU), weights, adapters and AdamW in fp32
        self.autocast = autocast
        card = base.card
        layers = _get(base.model, card.layers, "decoder layers")
        self.attention_sites: list[dict[str, LoRALinear]] = []
        self.mlp_sites: list[MixtureMLP] = []
        for i, layer in enumerate(layers):
            sites: dict[str, LoRALinear] = {}
            for path in card.attention:
                original = _get(layer, path, "attention projection")
                wrapped = original if isinstance(original, LoRALinear) else LoRALinear(original)
                _set(layer, path, wrapped)
                sites[path.rsplit(".", 1)[-1]] = wrapped
            self.attention_sites.append(sites)
            mlp = _get(layer, card.mlp.module, "MLP")
            if not isinstance(mlp, MixtureMLP):
                for name in [*card.mlp.up, card.mlp.down]:
                    _get(mlp, name, "MLP linear")
                act = _get(mlp, card.mlp.activation, "MLP activation")
                drop = _get(mlp, card.mlp.dropout, "MLP dropout") if card.mlp.dropout else None
                mlp = MixtureMLP(mlp, card.mlp.up, card.mlp.down, card.mlp.gated, act, drop)
                _set(layer, card.mlp.module, mlp)
            mlp.compute = expert_compute  # dense or grouped (top-k only) expert work: see MixtureMLP
            mlp.fused = fuse_mixture  # the dense path's per-expert work compiled: MixtureMLP._fused_dense
            self.mlp_sites.append(mlp)
        if len(card.mlp.up) != (2 if card.mlp.gated else 1):
            raise ModelCardError(f"model card '{card.name}': a gated MLP needs two 'up' linears, a plain one needs one")
        self.d_model = int(base.model.config.hidden_size)
        self.attached: DeviceAdapters | None = None
        # attention in fp32 where CPU autocast would run it in bf16 (its bf16 kernel is the slower)
        use_fp32_cpu_attention(base.model)

    @property
    def autocast(self) -> torch.dtype | None:
        """The autocast dtype of every forward with adapters attached (None: plain fp32)."""
        return self._autocast

    @autocast.setter
    def autocast(self, dtype: torch.dtype | None) -> None:
        self._autocast = dtype
        self.frozen_casts.keep_only(dtype)  # copies of another dtype would only hold memory

    @property
    def model(self) -> nn.Module:
        return self.base.model

    @property
    def device(self) -> torch.device:
        return next(self.base.model.parameters()).device

    def new_adapters(self, shape: AdapterShape, generator: torch.Generator) -> DeviceAdapters:
        """Fresh adapters of `shape`: A uniform(±1/√in), B zero, router N(0, 0.02), from `generator`."""
        card = self.base.card
        dev = self.device
        layers = []
        for sites, mlp in zip(self.attention_sites, self.mlp_sites):
            attn = {}
            if shape.attn_rank > 0:
                attn = {
                    name: StackedLoRA(1, shape.attn_rank, site.d_in, site.d_out, shape.alpha, generator, dev)
                    for name, site in sites.items()
                }
            bank = ExpertBank(
                shape.n_experts, shape.mlp_rank, mlp.up_dims, mlp.down_dims,
                self.d_model, shape.alpha, shape.top_k, generator, dev, routed=shape.routed,
            )
            layers.append(LayerAdapters(attn, bank))
        return DeviceAdapters(shape, layers, list(card.mlp.up), card.mlp.down)

    def attach(self, adapters: DeviceAdapters | None) -> None:
        for i, (sites, mlp) in enumerate(zip(self.attention_sites, self.mlp_sites)):
            layer = adapters.layers[i] if adapters is not None else None
            for name, site in sites.items():
                site.attach(layer.attn[name] if layer is not None and name in layer.attn else None)
            mlp.attach(layer.mlp if layer is not None else None)
        self.attached = adapters

    def attach_rows(self, devices: list[DeviceAdapters]) -> None:
        """Attach K devices' adapters at once, for a batch whose rows are grouped by device
        (rows [k·b, (k+1)·b) are device k's): every site runs each device's rows through that
        device's tensors (`LoRARows`, `BankRows` in simfed/learn/lora.py)."""
        for i, (sites, mlp) in enumerate(zip(self.attention_sites, self.mlp_sites)):
            layers = [d.layers[i] for d in devices]
            for name, site in sites.items():
                site.attach(LoRARows([layer.attn[name] if name in layer.attn else None for layer in layers]))
            mlp.attach(BankRows([layer.mlp for layer in layers]))
        self.attached = None

    @contextmanager
    def using(self, adapters: DeviceAdapters | None) -> Iterator[None]:
        """Attach `adapters` for the body of a `with` block, then restore the bare base model."""
        previous = self.attached
        self.attach(adapters)
        try:
            with self._precision():
                yield
        finally:
            self.attach(previous)

    @contextmanager
    def using_rows(self, devices: list[DeviceAdapters]) -> Iterator[None]:
        """`using` for K devices in one batch (`attach_rows`); one device is plain `using`."""
        if len(devices) == 1:
            with self.using(devices[0]):
                yield
            return
        previous = self.attached
        self.attach_rows(devices)
        try:
            with self._precision():
                yield
        finally:
            self.attach(previous)

    @contextmanager
    def _precision(self) -> Iterator[None]:
        """The model's autocast, with the frozen weights' casts made once (simfed/learn/frozen_casts.py)."""
        if self.autocast is None:
            yield
        else:
            with torch.autocast(device_type=self.device.type, dtype=self.autocast), \
                    self.frozen_casts.swapped_in(self.autocast):
                yield

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.base.model(input_ids=input_ids, use_cache=False).logits

    def device_logits(self, input_ids: torch.Tensor, n_devices: int) -> list[torch.Tensor]:
        """Each device's logits of a batch whose rows are grouped by device (`using_rows`).

        The transformer runs once over all K·b rows; the LM head runs on each device's b rows.
        The (K·b, T, vocab) tensor of a whole batch is the largest of a step (201 MB for 8
        devices of 2 × 64 SmolLM2 tokens), and on a CPU a tensor that large is a fresh mmap of
        the allocator at every step, its page faults costing more than the work on it (measured:
        cross entropy over 1024 rows 4-5× slower than 8 times over 128); per device, it is the
        sequential step's own size. Where the causal LM's logits are not exactly the head of its
        last hidden state (a model type not in `PLAIN_HEAD`), the whole logits, split."""
        if n_devices == 1:
            return [self.logits(input_ids)]
        per = input_ids.shape[0] // n_devices
        if self.model.config.model_type not in PLAIN_HEAD:
            return list(self.logits(input_ids).split(per))
        hidden = self.model.base_model(input_ids=input_ids, use_cache=False).last_hidden_state
        head = self.model.get_output_embeddings()
        return [head(h) for h in hidden.split(per)]
