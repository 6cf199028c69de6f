"""Helpers shared by the learning tests: budgets, client lists, non-zero LoRA B, token ids."""
from __future__ import annotations

import numpy as np
import torch

from simfed.learn.methods.base import Budget, ClientInfo

FLAGSHIP = Budget(memory_bytes=12e9, flops_per_s=150e9)  # budget score 1 → 4 experts / rank 32
LOW_END = Budget(memory_bytes=3e9, flops_per_s=25e9)  # budget score 0.25 → 2 experts / rank 16


def clients_for(data: list, budgets: list[Budget]) -> list[ClientInfo]:
    return [ClientInfo(i, b, d) for i, (d, b) in enumerate(zip(data, budgets))]


def randomise_lora_b(adapters: torch.nn.Module, seed: int, std: float = 0.05) -> None:
    """Give every LoRA B a non-zero value (fresh adapters have B = 0, which hides most bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in adapters.named_parameters():
            if name.endswith("lora_B"):
                p.copy_(torch.randn(p.shape, generator=g) * std)


def random_ids(batch: int, length: int, seed: int, vocab: int = 256) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).integers(0, vocab, size=(batch, length)), dtype=torch.long)
