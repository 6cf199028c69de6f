"""Wasted work decided by the method: a straggler's training that the next download overwrites is
wasted (all of FedAvg's), the part it keeps is not (CoMiGS's private specialist).

tiny-gpt2 (d = 64), rank r = 8 for every LoRA (the default): per layer, the attention LoRA has
r(64 + 192) + r(64 + 64) = 384 r elements (c_attn 64 -> 192, c_proj 64 -> 64), an MLP expert
r(64 + 256) + r(256 + 64) = 640 r (c_fc 64 -> 256, c_proj 256 -> 64), a router over 2 experts
2 x 64. CoMiGS-1G1S: attention and the generalist are shared, the specialist and the router are
private: (640 r + 128) / (384 r + 2 x 640 r + 128) = 5248 / 13440 of its training survives the
next download. FedAvg: everything is shared, nothing survives."""
from __future__ import annotations

import json

import pytest
from tests.run.conftest import tiny_gpt2_head

SCENARIO = tiny_gpt2_head("waste_test") + """
  - {{name: fedavg, kind: fedavg}}
  - {{name: comigs, kind: comigs, variant: 1g1s, tau: 2, router_steps: 1}}
world:
  compute_noise_sigma: 0.0
  waste: {waste}
  fleet:
    - {{count: 2, tier: phone_mid, link: wifi_home, flops_per_s: 4.0e8}}
    - {{count: 1, tier: phone_low, link: lte, flops_per_s: 4.0e7}}
  server: {{rounds: 12, target_per_round: 3, over_selection: 1.0, deadline_s: 1.0, late_reports: upload}}
"""
SURVIVES = {"fedavg": 0.0, "comigs": (640 * 8 + 128) / (384 * 8 + 2 * 640 * 8 + 128)}


@pytest.mark.parametrize("waste", ["by_method", "legacy"])
def test_a_stragglers_wasted_compute_is_what_the_next_download_overwrites(run_text, tmp_path, waste):
    run = run_text(SCENARIO.format(cache=tmp_path / "cache", waste=waste), tmp_path / "waste_test.yaml",
                   tmp_path / "runs")
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    for method, survives in SURVIVES.items():
        mine = [e for e in events if e["method"] == method]
        late = [e for e in mine if e["kind"] == "straggler"]
        assert late, f"{method}: the slow device must straggle"
        for e in late:
            spent = {x["kind"]: x for x in mine if x.get("device") == e["device"] and x["round"] == e["round"]}
            compute_s = spent["compute_end"]["seconds"]
            lost = 1.0 - survives if waste == "by_method" else 0.0
            assert e["wasted_compute_s"] == pytest.approx(lost * compute_s)
            assert e["wasted_bytes"] == spent["upload_end"]["bytes"] + round(lost * spent["download_end"]["bytes"])
            assert e["wasted_energy_j"] == pytest.approx(
                spent["upload_end"]["energy_j"] + lost * (spent["download_end"]["energy_j"] + spent["compute_end"]["energy_j"]))
