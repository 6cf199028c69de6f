"""Evaluation on the whole split ("all") and perplexity's standard error, against hand computations."""
from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import torch

from simfed.learn.evaluate import evaluate_windows, evaluation_windows, mean_standard_error
from simfed.learn.spec import TrainingSpec


def test_all_windows_predict_every_token_once_but_the_tail():
    tokens = np.arange(1000, 1103)  # 103 tokens, seq_len 10: (103 − 1) // 10 = 10 windows
    windows = evaluation_windows(tokens, 10, "all")
    assert windows.shape == (10, 11)
    assert windows[0].tolist() == list(range(1000, 1011)) and windows[9][0] == 1090
    # targets: tokens 1 … 100, each once; the last (103 − 1) mod 10 = 2 tokens fill no window
    assert windows[:, 1:].reshape(-1).tolist() == list(range(1001, 1101))


def test_numbered_windows_are_unchanged():
    tokens = np.arange(200)
    got = evaluation_windows(tokens, 10, 4)  # evenly spaced starts 0, 63, 126, 189
    assert [int(w[0]) for w in got] == [0, 63, 126, 189]


def test_eval_windows_accepts_all_or_a_count():
    assert TrainingSpec(eval_windows="all").eval_windows == "all"
    assert TrainingSpec(eval_windows=3).eval_windows == 3
    with pytest.raises(ValueError):
        TrainingSpec(eval_windows="some")


def test_standard_error_by_hand():
    # values 1, 2, 3, 6: mean 3, sample variance (4 + 1 + 0 + 9) / 3 = 14/3, SE = √(14/3) / 2
    assert mean_standard_error(np.array([1.0, 2.0, 3.0, 6.0])) == pytest.approx(math.sqrt(14 / 3) / 2)
    assert math.isnan(mean_standard_error(np.array([5.0])))


def test_evaluate_windows_ppl_and_standard_error_by_hand(tiny_gpt2):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 256, size=5 * 16 + 1)
    windows = evaluation_windows(tokens, 16, "all")  # 5 windows of 17 tokens
    result = evaluate_windows(tiny_gpt2, None, windows, batch_size=2)  # batches of 2, 2, 1
    per_window = []  # mean CE of each window, from log-probabilities by hand
    with torch.no_grad():
        for w in windows:
            ids = torch.as_tensor(w[None, :-1])
            logp = torch.log_softmax(tiny_gpt2.logits(ids).double(), dim=-1)[0]
            per_window.append(-float(sum(logp[t, int(w[t + 1])] for t in range(16))) / 16)
    mean_ce = statistics.mean(per_window)
    assert result.n_tokens == 80
    assert result.ppl == pytest.approx(math.exp(mean_ce), rel=1e-5)
    se_ce = statistics.stdev(per_window) / math.sqrt(5)
    assert result.ppl_se == pytest.approx(math.exp(mean_ce) * se_ce, rel=1e-4)
    assert result.ppl_se > 0
