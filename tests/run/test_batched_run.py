"""A scenario with `executor: {kind: local, batch_devices: K}`: repeated, byte-identical metrics;
against one by one, the same metrics to float rounding (tests/learn/test_batched.py has the
tensor-level equality and its tolerance)."""
from __future__ import annotations

import pytest

from simfed.report.readers import read_metrics
from tests.run.conftest import tiny_gpt2_head

METHODS = """  - {{name: comigs, kind: comigs, variant: 1gxs, min_experts: 1, tau: 2, router_steps: 1}}
  - {{name: hetlora, kind: hetlora, min_rank: 2, prune_gamma: 0.9}}
world:
  fleet:
    - {{count: 2, tier: phone_flagship, link: wifi_home}}
    - {{count: 2, tier: phone_low, link: wifi_home}}
  server: {{rounds: 2, target_per_round: 4, over_selection: 1.0, deadline_s: 100000}}
executor: {executor}
"""


def run_with(run_text, tmp_path, name: str, executor: str):
    text = (tiny_gpt2_head(name) + METHODS).format(cache=tmp_path / "cache", executor=executor)
    return run_text(text, tmp_path / f"{name}.yaml", tmp_path / "runs" / name)


def test_a_batched_run_repeats_byte_for_byte_and_matches_one_by_one(run_text, tmp_path):
    first = run_with(run_text, tmp_path, "b1", "{kind: local, batch_devices: 4}")
    again = run_with(run_text, tmp_path, "b2", "{kind: local, batch_devices: 4}")
    alone = run_with(run_text, tmp_path, "s1", "{kind: local}")
    assert (first / "metrics.csv").read_bytes() == (again / "metrics.csv").read_bytes()
    batched, sequential = read_metrics(first), read_metrics(alone)
    assert len(batched) == len(sequential) > 0
    for b, s in zip(batched, sequential):
        assert (b["method"], b["round"], b["device"]) == (s["method"], s["round"], s["device"])
        assert b["ppl"] == pytest.approx(s["ppl"], rel=1e-4)
    assert max(r["round"] for r in batched) == 2  # evaluated after training, not only at round 0


def test_batch_devices_below_one_is_a_config_error(tmp_path):
    from simfed.config import load_scenario
    from simfed.errors import SimfedError

    text = (tiny_gpt2_head("bad") + METHODS).format(cache=tmp_path / "cache", executor="{kind: local, batch_devices: 0}")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SimfedError, match="batch_devices"):
        load_scenario(path)
