"""`precision: auto` on a CPU: fp32 unless native bf16, a large step and a measured margin."""
from __future__ import annotations

import json

import pytest
import torch

import simfed.learn.cpu_precision as cp
from simfed.learn.device import settle_cpu_precision
from simfed.learn.spec import TrainingSpec


class FakeTimer:
    """fp32 and bf16 step seconds as given; counts the measurements."""

    def __init__(self, fp32_s: float, bf16_s: float) -> None:
        self.times = {None: fp32_s, torch.bfloat16: bf16_s}
        self.calls = 0

    def __call__(self, model, batch_size, seq_len, autocast):
        self.calls += 1
        return self.times[autocast]


@pytest.fixture
def native_bf16(monkeypatch):
    monkeypatch.setattr(cp, "native_bf16_flags", lambda: ("avx512_bf16",))
    monkeypatch.setattr(cp, "MIN_STEP_FLOPS", 0.0)  # the tiny model's step counts as large


def test_without_native_bf16_it_stays_fp32_and_measures_nothing(tiny_llama, monkeypatch, tmp_path):
    monkeypatch.setattr(cp, "native_bf16_flags", lambda: ())
    timer = FakeTimer(2.0, 1.0)
    choice = cp.choose_cpu_precision(tiny_llama, 4, 64, tmp_path, timer)
    assert choice.precision == "float32" and timer.calls == 0 and "no native bf16" in choice.reason


def test_a_tiny_step_stays_fp32_whatever_the_cpu(tiny_llama, monkeypatch, tmp_path):
    # tiny-llama at 2 × 32 tokens: about 2e7 FLOPs a step, far below 1e10
    monkeypatch.setattr(cp, "native_bf16_flags", lambda: ("amx_bf16",))
    timer = FakeTimer(2.0, 1.0)
    assert cp.choose_cpu_precision(tiny_llama, 2, 32, tmp_path, timer).precision == "float32"
    assert timer.calls == 0


@pytest.mark.parametrize("fp32_s, bf16_s, chosen", [
    (1.20, 0.97, "bfloat16"),  # 1.24x: the figure measured on an AMX CPU
    (1.00, 0.95, "float32"),  # 1.05x: inside the margin, fp32 kept
    (1.00, 1.30, "float32"),  # emulated bf16 is slower
])
def test_bf16_is_chosen_only_by_a_measured_margin_and_the_answer_is_cached(
        tiny_llama, native_bf16, tmp_path, fp32_s, bf16_s, chosen):
    timer = FakeTimer(fp32_s, bf16_s)
    first = cp.choose_cpu_precision(tiny_llama, 4, 64, tmp_path, timer)
    assert (first.precision, first.fp32_s, first.bf16_s, timer.calls) == (chosen, fp32_s, bf16_s, 2)
    again = cp.choose_cpu_precision(tiny_llama, 4, 64, tmp_path, FakeTimer(1.0, 100.0))  # cached: no re-measure
    assert again == first
    table = json.loads((tmp_path / cp.CACHE_FILE).read_text())
    assert [v["precision"] for v in table.values()] == [chosen]
    other = cp.choose_cpu_precision(tiny_llama, 8, 64, tmp_path, FakeTimer(1.0, 1.0))  # another shape: its own entry
    assert other.precision == "float32" and len(json.loads((tmp_path / cp.CACHE_FILE).read_text())) == 2


def test_the_real_timer_runs_both_precisions_on_the_cpu(tiny_llama):
    before = tiny_llama.autocast
    for autocast in (None, torch.bfloat16):
        assert cp.time_step(tiny_llama, 2, 16, autocast, warmup=0, repeats=1) > 0
    assert tiny_llama.autocast is before  # restored


def test_settle_sets_the_model_and_leaves_named_precisions_alone(tiny_llama, native_bf16, monkeypatch, tmp_path):
    monkeypatch.setenv("SIMFED_CACHE", str(tmp_path))
    monkeypatch.setattr(cp, "time_step", FakeTimer(1.2, 0.97))
    before = tiny_llama.autocast
    try:
        assert settle_cpu_precision(tiny_llama, TrainingSpec(precision="float32")) is None
        choice = settle_cpu_precision(tiny_llama, TrainingSpec(precision="auto", batch_size=4, seq_len=64))
        assert choice.precision == "bfloat16" and tiny_llama.autocast == torch.bfloat16
    finally:
        tiny_llama.autocast = before
