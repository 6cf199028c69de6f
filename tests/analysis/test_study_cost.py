"""analysis/study_cost.py: the step, phase and evaluation counts of a study, by hand."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from simfed.learn.adapters import AdapterShape
from simfed.learn.flops import forward_flops, step_flops

ROOT = Path(__file__).resolve().parents[2]

SCENARIO = """
name: cost_demo
seeds: [0, 1]
model: tiny-llama
data: {users: [toy:a, toy:b], train_tokens: 2000, val_tokens: 300, test_tokens: 100}
training: {local_steps: 3, batch_size: 2, seq_len: 32, eval_every: 1, eval_windows: all}
methods:
  - {name: comigs, kind: comigs, variant: 1g1s, tau: 2, router_steps: 1}
world:
  fleet: [{count: 2, tier: phone_flagship, link: wifi_home}]
  server: {rounds: 2, target_per_round: 2}
"""


@pytest.fixture(scope="module")
def study_cost():
    spec = importlib.util.spec_from_file_location("analysis_study_cost", ROOT / "analysis" / "study_cost.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_counts_by_hand(study_cost, tmp_path):
    path = tmp_path / "cost_demo.yaml"
    path.write_text(SCENARIO)
    total, per_method = study_cost.study_cost(path)
    dims = study_cost.dims_of("tiny-llama")
    e2 = AdapterShape(2, 8, 8)
    # a device: 2 rounds × 3 = 6 expert steps, ⌊6 / tau 2⌋ = 3 router phases of 1 step;
    # evaluation: (100 − 1) // 32 = 3 whole windows = 96 tokens, after each of the 2 rounds
    per_device = 6 * step_flops(dims, e2, 2, 32) + 3 * step_flops(dims, e2, 2, 32, "router") \
        + 2 * 96 * forward_flops(dims, e2, 1, 32) / 32
    assert per_method["comigs"].flops == pytest.approx(2 * per_device)
    pretrained = 2 * 96 * forward_flops(dims, AdapterShape(1, 8, 0), 1, 32) / 32  # round 0, 2 devices
    assert total.flops == pytest.approx(2 * (2 * per_device + pretrained))  # 2 seeds
    assert total.seconds(1e9, 0.0) == pytest.approx(total.flops / 1e9)


def test_a_pretrained_entry_costs_only_its_round_zero(study_cost, tmp_path):
    """Pretrained has no adapters (its spec has no rank): it adds nothing to the round-0
    evaluation every study pays once a seed."""
    path = tmp_path / "cost_demo.yaml"
    path.write_text(SCENARIO)
    with_pretrained = tmp_path / "cost_demo_pretrained.yaml"
    with_pretrained.write_text(SCENARIO.replace("methods:\n", "methods:\n  - {name: pretrained, kind: pretrained}\n"))
    total, _ = study_cost.study_cost(path)
    total_p, per_method = study_cost.study_cost(with_pretrained)
    assert per_method["pretrained"].flops == 0
    assert total_p.flops == pytest.approx(total.flops)


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*/table1_*.yaml")), ids=lambda p: p.parent.name + "/" + p.name)
def test_every_shipped_table1_study_has_a_cost(study_cost, path):
    total, per_method = study_cost.study_cost(path)
    assert total.flops > 0
    assert all(c.flops > 0 for name, c in per_method.items() if name != "pretrained")
