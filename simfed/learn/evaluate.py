"""Per-device perplexity and next-token accuracy, with a standard error, on deterministic windows.

Two choices of windows (`training.eval_windows`), both the same for every method and round, so two
evaluations differ only because the model did:
- a number n: n windows of seq_len+1 tokens evenly spaced over the split (`fixed_windows`);
- "all": the whole split, cut into consecutive windows of seq_len+1 tokens that overlap by one
  token (stride seq_len), so every token after the first is predicted exactly once — all but the
  last (len − 1) mod seq_len tokens, which do not fill a window (under one window's worth).
Perplexity is exp(mean token cross-entropy) over all predicted tokens of those windows.

Standard error: the windows are the sampling units (tokens within a window are correlated, so a
per-token SE would be far too small). With L_w the mean CE of window w (all windows have the same
length) the mean CE is mean(L_w), its SE s(L_w)/√n (s the sample std), and perplexity's SE by the
delta method exp'(m)·SE = ppl · SE(mean CE). One window: NaN. The SE says how much the number would
move on another sample of the device's text; it is not the seed-to-seed spread of training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from simfed.data.federated import fixed_windows
from simfed.learn.adapters import AdaptedModel, DeviceAdapters
from simfed.learn.methods.base import EvalResult

ALL = "all"  # training.eval_windows: the whole split


@dataclass
class _Tally:
    """Running sums of one device's evaluation (the order of the sums is the windows')."""

    loss: float = 0.0
    correct: int = 0
    tokens: int = 0
    window_losses: list[np.ndarray] = field(default_factory=list)  # mean CE of each window

    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        logits = logits.float()
        flat_logits, flat_targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        # the total keeps its own summed reduction: the perplexities of earlier runs, bit for bit
        self.loss += float(F.cross_entropy(flat_logits, flat_targets, reduction="sum"))
        per_token = F.cross_entropy(flat_logits, flat_targets, reduction="none").reshape(targets.shape)
        self.window_losses.append(per_token.double().mean(dim=1).cpu().numpy())
        self.correct += int((logits.argmax(-1) == targets).sum())
        self.tokens += targets.numel()

    def result(self) -> EvalResult:
        mean = self.loss / max(self.tokens, 1)
        ppl = math.exp(mean)
        losses = np.concatenate(self.window_losses) if self.window_losses else np.zeros(0)
        return EvalResult(ppl=ppl, acc=self.correct / max(self.tokens, 1), n_tokens=self.tokens,
                          ppl_se=ppl * mean_standard_error(losses))


def _chunk(windows: np.ndarray, start: int, batch_size: int, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(windows[start : start + batch_size], dtype=np.int64), device=device)


@torch.no_grad()
def evaluate_windows(
    model: AdaptedModel, adapters: DeviceAdapters | None, windows: np.ndarray, batch_size: int = 8
) -> EvalResult:
    """Mean CE → perplexity, next-token accuracy and perplexity's standard error, of `adapters`
    on the base model, `batch_size` windows a forward."""
    tally = _Tally()
    with model.using(adapters):
        for start in range(0, len(windows), batch_size):
            chunk = _chunk(windows, start, batch_size, model.device)
            tally.add(model.logits(chunk[:, :-1]), chunk[:, 1:])
    return tally.result()


@torch.no_grad()
def evaluate_many(
    model: AdaptedModel, devices: list[tuple[DeviceAdapters, np.ndarray]], batch_size: int = 8
) -> list[EvalResult]:
    """`evaluate_windows` of several devices (adapters, windows), their chunks in one forward:
    the j-th chunk of every device that has one of the same size runs as one batch whose rows are
    grouped by device (`AdaptedModel.using_rows`), and each device's sums are taken on its own
    rows, in its windows' order. Equal to one by one up to float rounding (the base matmuls see
    K·b rows instead of b); one device is `evaluate_windows` exactly."""
    tallies = [_Tally() for _ in devices]
    longest = max((len(w) for _, w in devices), default=0)
    for start in range(0, longest, batch_size):
        by_size: dict[int, list[int]] = {}
        for i, (_, windows) in enumerate(devices):
            n = len(windows[start : start + batch_size])
            if n:
                by_size.setdefault(n, []).append(i)
        for n, members in by_size.items():
            chunks = [_chunk(devices[i][1], start, batch_size, model.device) for i in members]
            ids = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
            with model.using_rows([devices[i][0] for i in members]):
                logits = model.device_logits(ids[:, :-1], len(members))  # each device's own
                for k, i in enumerate(members):
                    tallies[i].add(logits[k], chunks[k][:, 1:])
    return [t.result() for t in tallies]


def mean_standard_error(values: np.ndarray) -> float:
    """s / √n of a sample (n − 1 in s); NaN for fewer than two values."""
    if len(values) < 2:
        return math.nan
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def evaluation_windows(tokens: np.ndarray, seq_len: int, n_windows: int | Literal["all"]) -> np.ndarray:
    """The deterministic evaluation windows of a split: `n_windows` evenly spaced ones (at most as
    many as fit), or with "all" the whole split in consecutive windows (module docstring)."""
    if n_windows == ALL:
        return tiled_windows(tokens, seq_len)
    n_fit = max(1, (len(tokens) - 1) // seq_len)
    return fixed_windows(tokens, seq_len, min(n_windows, n_fit))


def tiled_windows(tokens: np.ndarray, seq_len: int) -> np.ndarray:
    """(n, seq_len+1) windows at starts 0, seq_len, 2·seq_len, ...: window i predicts tokens
    i·seq_len + 1 … (i+1)·seq_len, so together they predict every token once (but the tail)."""
    n = (len(tokens) - 1) // seq_len
    if n < 1:
        return fixed_windows(tokens, seq_len, 1)  # raises the split-too-short error with its advice
    starts = np.arange(n, dtype=np.int64) * seq_len
    return np.asarray(tokens)[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64)
