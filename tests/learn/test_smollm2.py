"""The real offline model, SmolLM2-135M (slow: loads ~135M parameters from the user cache).

Held-out English technical text that every machine has offline: the docstrings of a few Python
standard-library modules.
"""
from __future__ import annotations

import importlib
import inspect
import json
import math

import numpy as np
import pytest
import torch

from simfed.learn.adapters import AdaptedModel, AdapterShape
from simfed.learn.evaluate import evaluate_windows, evaluation_windows
from simfed.learn.flops import ModelDims, step_flops
from tests.learn.conftest import adapted
from tests.learn.test_flops import counted_step

pytestmark = pytest.mark.slow

MODULES = ["argparse", "textwrap", "json", "subprocess", "pathlib", "shutil", "logging"]


def stdlib_docstrings(modules: list[str]) -> str:
    """Each module's docstring and its public classes' and functions' longer docstrings."""
    parts = []
    for name in modules:
        module = importlib.import_module(name)
        parts.append(inspect.getdoc(module) or "")
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                doc = inspect.getdoc(obj)
                if doc and len(doc) > 200:
                    parts.append(doc)
    return "\n\n".join(p for p in parts if p)


@pytest.fixture(scope="module")
def smollm2() -> AdaptedModel:
    model = adapted("smollm2-135m")
    model.model.set_attn_implementation("eager")  # FlopCounterMode sees eager attention on CPU
    return model


def test_offline_smollm2_perplexity_on_stdlib_docstrings(smollm2):
    tokens = np.asarray(smollm2.base.tokenizer.encode(stdlib_docstrings(MODULES)))
    assert len(tokens) > 16 * 129
    windows = evaluation_windows(tokens, seq_len=128, n_windows=16)
    result = evaluate_windows(smollm2, None, windows)
    print(f"SmolLM2-135M perplexity on stdlib docstrings: {result.ppl:.2f} (acc {result.acc:.3f}, {result.n_tokens} tokens)")
    assert math.isfinite(result.ppl) and result.ppl < 60
    assert result.n_tokens == 16 * 128


def test_fresh_adapters_leave_smollm2_logits_unchanged(smollm2):
    ids = torch.as_tensor(np.asarray(smollm2.base.tokenizer.encode(inspect.getdoc(json))[:48]))[None]
    adapters = smollm2.new_adapters(AdapterShape(2, 8, 8), torch.Generator().manual_seed(0))
    with torch.no_grad():
        bare = smollm2.logits(ids)
        with smollm2.using(adapters):
            adapted_logits = smollm2.logits(ids)
    torch.testing.assert_close(adapted_logits, bare, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("train", ["experts", "router"])
def test_step_flops_match_the_flop_counter_on_smollm2(smollm2, train):
    shape = AdapterShape(2, mlp_rank=8, attn_rank=8)
    counted = counted_step(smollm2, shape, batch=1, seq_len=64, train=train)
    predicted = step_flops(ModelDims.of(smollm2), shape, batch_size=1, seq_len=64, train=train)
    print(f"SmolLM2 {train} step, B=1 T=64: predicted {predicted:.4g} FLOPs, counted {counted:.4g}")
    assert predicted == pytest.approx(counted, rel=0.10)
