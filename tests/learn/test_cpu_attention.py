"""Attention in fp32 under CPU bf16 autocast (simfed/learn/cpu_attention.py): HF's `sdpa` bit for bit
where autocast is off, closer to exact attention than bf16 SDPA where it is on, and installed
only on models that use `sdpa`."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from simfed.learn.adapters import AdapterShape
from simfed.learn.cpu_attention import NAME, sdpa_fp32_on_cpu, use_fp32_cpu_attention
from simfed.learn.local_update import next_token_loss
from tests.learn.conftest import adapted
from tests.learn.helpers import random_ids, randomise_lora_b


def exact_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal softmax(q kᵀ/√d) v in float64, written out: (B, H, T, D) → (B, T, H, D) as HF returns it."""
    q, k, v = q.double(), k.double(), v.double()
    t = q.shape[2]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    return (scores.softmax(-1) @ v).transpose(1, 2)


class Attention(nn.Module):
    """What `sdpa_attention_forward` reads off an attention module: causal, no grouped heads."""

    is_causal = True


@pytest.mark.parametrize("seed", range(3))
def test_under_bf16_autocast_it_is_fp32_attention_on_the_bf16_inputs(seed):
    """Its output is the exact attention of its bf16 inputs rounded once to bf16 (off by at most
    one bf16 step, where fp32 and float64 round to different sides), and closer to it than the
    bf16 kernel's; gradients come back in the inputs' dtype."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 4, 48, 32, generator=g).to(torch.bfloat16).requires_grad_() for _ in range(3))
    exact = exact_attention(q, k, v)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, _ = sdpa_fp32_on_cpu(Attention(), q, k, v, None)
        bf16_kernel = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)
    assert ours.dtype == torch.bfloat16
    ulp = exact.abs().clamp_min(2.0 ** -20) * 2.0 ** -7  # one bf16 step at each value (8 significant bits)
    assert ((ours.double() - exact).abs() <= ulp).all()
    assert (ours.double() - exact).abs().mean() < (bf16_kernel.double() - exact).abs().mean()
    ours.float().sum().backward()
    assert q.grad is not None and q.grad.dtype == torch.bfloat16 and torch.isfinite(q.grad).all()


@pytest.mark.parametrize("card", ["tiny-gpt2", "tiny-llama"])
def test_outside_bf16_autocast_it_is_hf_sdpa_bit_for_bit(card):
    """fp32 (and a padding mask): the loss and every adapter gradient equal `sdpa`'s exactly."""
    model = adapted(card)
    assert model.model.config._attn_implementation == NAME
    adapters = model.new_adapters(AdapterShape(2, 4, 4), torch.Generator().manual_seed(0))
    randomise_lora_b(adapters, seed=1)
    ids = random_ids(3, 17, seed=2)
    mask = torch.ones(3, 16, dtype=torch.long)
    mask[1, :5] = 0  # a left-padded row

    def step() -> list[torch.Tensor]:
        with model.using(adapters):
            loss = next_token_loss(model, ids)
            masked = model.model(input_ids=ids[:, :-1], attention_mask=mask, use_cache=False).logits.square().mean()
        return [loss.detach(), masked.detach(), *torch.autograd.grad(loss + masked, list(adapters.parameters()))]

    ours = step()
    model.model.set_attn_implementation("sdpa")
    hf = step()
    assert all(torch.equal(a, b) for a, b in zip(ours, hf))


@pytest.mark.parametrize("card", ["tiny-gpt2", "tiny-llama"])
def test_a_bf16_model_step_on_a_cpu_runs_attention_in_fp32(card, monkeypatch):
    """Through the whole model under the model's bf16 region (with and without a padding mask):
    every attention call reaches HF's SDPA with fp32 q, k, v and autocast off, and the step is
    finite."""
    import simfed.learn.cpu_attention as ca

    seen = []
    hf_sdpa = ca.sdpa_attention_forward

    def spy(module, query, key, value, attention_mask, **kwargs):
        seen.append((query.dtype, key.dtype, value.dtype, torch.is_autocast_enabled("cpu")))
        return hf_sdpa(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setattr(ca, "sdpa_attention_forward", spy)
    model = adapted(card)
    model.autocast = torch.bfloat16
    adapters = model.new_adapters(AdapterShape(2, 4, 4), torch.Generator().manual_seed(0))
    ids = random_ids(2, 17, seed=1)
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[0, :4] = 0
    with model.using(adapters):
        loss = next_token_loss(model, ids)
        padded = model.model(input_ids=ids[:, :-1], attention_mask=mask, use_cache=False).logits.float().mean()
    (loss + padded).backward()
    layers = model.model.config.num_hidden_layers
    assert len(seen) == 2 * layers
    assert all(s == (torch.float32, torch.float32, torch.float32, False) for s in seen)
    assert torch.isfinite(loss) and torch.isfinite(padded)


def test_only_a_model_on_sdpa_is_switched():
    model = adapted("tiny-llama")
    assert use_fp32_cpu_attention(model.model)  # again: idempotent
    model.model.set_attn_implementation("eager")
    assert not use_fp32_cpu_attention(model.model)
    assert model.model.config._attn_implementation == "eager"
