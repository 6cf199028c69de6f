"""Per-device perplexity and next-token accuracy on a deterministic set of windows.

The windows are evenly spaced over the split (`fixed_windows`), the same for every method and
every round, so two evaluations differ only because the model did. Perplexity is
exp(mean token cross-entropy) over all predicted tokens of those windows.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from simfed.data.federated import fixed_windows
from simfed.learn.adapters import AdaptedModel, DeviceAdapters
from simfed.learn.methods.base import EvalResult


@torch.no_grad()
def evaluate_windows(
    model: AdaptedModel, adapters: DeviceAdapters | None, windows: np.ndarray, batch_size: int = 8
) -> EvalResult:
    """Mean CE → perplexity, and next-token accuracy, of `adapters` on the base model."""
    total_loss, total_correct, total_tokens = 0.0, 0, 0
    with model.using(adapters):
        for start in range(0, len(windows), batch_size):
            chunk = torch.as_tensor(np.asarray(windows[start : start + batch_size], dtype=np.int64), device=model.device)
            logits = model.logits(chunk[:, :-1]).float()
            targets = chunk[:, 1:]
            total_loss += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"))
            total_correct += int((logits.argmax(-1) == targets).sum())
            total_tokens += targets.numel()
    mean = total_loss / max(total_tokens, 1)
    return EvalResult(ppl=math.exp(mean), acc=total_correct / max(total_tokens, 1), n_tokens=total_tokens)


def evaluation_windows(tokens: np.ndarray, seq_len: int, n_windows: int) -> np.ndarray:
    """The deterministic evaluation windows of a split (at most as many as fit)."""
    n_fit = max(1, (len(tokens) - 1) // seq_len)
    return fixed_windows(tokens, seq_len, min(n_windows, n_fit))
