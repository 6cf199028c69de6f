"""Attention in fp32 on a CPU under bf16 autocast: torch's CPU flash attention is slower in bf16.

On a CPU, `scaled_dot_product_attention` under bf16 autocast runs torch's flash-attention kernel
in bf16, and its backward is several times slower than the same kernel in fp32: a SmolLM2
attention (9 heads of 64, causal) forward and backward took 2.69 ms in bf16 against 1.12 ms with
its bf16 inputs upcast to fp32 (2 × 64 tokens; 5.20 vs 2.34 ms at 4 × 64, 21.4 vs 10.0 ms at
16 × 64; Intel Xeon with AMX, 2 threads, torch 2.13) — about 8% of a whole bf16 step. So simfed
runs attention on a CPU in fp32 whenever autocast would run it in bf16: q, k, v (and a floating
mask, a position bias) go up to fp32, torch's own SDPA runs outside autocast, and the output comes back in the
autocast dtype, which is what autocast's SDPA returns and what the next projection casts to
anyway. The numbers differ from bf16 SDPA's, by being more precise: the softmax and both
products of attention are fp32 on the bf16-rounded inputs. Everywhere else — fp32 runs, a GPU
(whose bf16 kernels are its fast path), fp16 — it is HF's `sdpa` unchanged, bit for bit.

It is installed as a Hugging Face attention implementation (`AttentionInterface`, the library's
extension point, with `sdpa`'s mask function), on models that use `sdpa`: a model set to `eager`
or another implementation keeps it, and so does every model under a transformers older than 4.53
(no mask functions by name). Registering is process-wide in transformers and idempotent.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

try:  # transformers >= 4.53 builds masks by attention implementation; before, only `sdpa` skips causal masks
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
except ImportError:  # pragma: no cover - older transformers: stay on `sdpa`
    AttentionMaskInterface = sdpa_mask = None

NAME = "simfed_sdpa"


def sdpa_fp32_on_cpu(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, **kwargs: object) -> tuple[torch.Tensor, None]:
    """HF's `sdpa_attention_forward`, in fp32 where CPU autocast would run it in a lower precision."""
    if query.device.type != "cpu" or not torch.is_autocast_enabled("cpu") \
            or torch.get_autocast_dtype("cpu") != torch.bfloat16:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    kwargs = {name: value.float() if isinstance(value, torch.Tensor) and value.is_floating_point() else value
              for name, value in kwargs.items()}  # e.g. a position bias, which meets the fp32 scores
    with torch.autocast("cpu", enabled=False):
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                              **kwargs)
    return out.to(torch.bfloat16), weights


def use_fp32_cpu_attention(model: nn.Module) -> bool:
    """Switch `model` from `sdpa` to `sdpa_fp32_on_cpu`; whether it was switched (not on a
    transformers too old to give a named implementation `sdpa`'s masks)."""
    if AttentionMaskInterface is None or getattr(model.config, "_attn_implementation", None) not in ("sdpa", NAME):
        return False
    AttentionInterface.register(NAME, sdpa_fp32_on_cpu)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return True
