"""A diverged device is refused by the server, not merged: the others stay finite, the run goes on.

Device 1 trains with a learning rate of 1e12 (every other device with the scenario's): its
training loss turns non-finite in its first round. Three always-on devices, the server waits for
all three every round, so every round has exactly one refusal and two merges."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from simfed.learn.methods.fedavg import FedAvg
from simfed.report.readers import read_metrics, read_summary
from tests.run.conftest import tiny_gpt2_head

SCENARIO = tiny_gpt2_head("divergence_test") + """
  - {{name: fedavg, kind: fedavg}}
world:
  fleet:
    - {{count: 3, tier: phone_mid, link: wifi_home, flops_per_s: 4.0e7}}
  server: {{rounds: 3, target_per_round: 3, over_selection: 1.0, deadline_s: 600}}
"""


def exploding(devices: set[int] | None):
    """FedAvg.local_update with lr 1e12 on `devices` (None: all)."""
    real = FedAvg.local_update

    def local_update(self, client, received, plan):
        if devices is not None and client not in devices:
            return real(self, client, received, plan)
        recipe = self.fed.recipe
        self.fed.recipe = dataclasses.replace(recipe, lr=1e12)
        try:
            return real(self, client, received, plan)
        finally:
            self.fed.recipe = recipe

    return local_update


def events_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def run_with(run_text, tmp_path: Path, monkeypatch, devices: set[int] | None) -> Path:
    monkeypatch.setattr(FedAvg, "local_update", exploding(devices))
    text = SCENARIO.format(cache=tmp_path / "cache")
    return run_text(text, tmp_path / "divergence_test.yaml", tmp_path / "runs")


def test_one_diverging_device_is_refused_and_the_others_stay_finite(run_text, tmp_path, monkeypatch):
    run = run_with(run_text, tmp_path, monkeypatch, {1})
    events = events_of(run)
    diverged = [e for e in events if e["kind"] == "diverged"]
    assert [(e["device"], e["round"], e["reason"]) for e in diverged] == [(1, r, "non_finite") for r in range(3)]
    for e in diverged:
        # the refusal comes before the merge, which leaves device 1 out
        [agg] = [x for x in events if x["kind"] == "aggregated" and x["round"] == e["round"]]
        assert agg["devices"] == [0, 2] and events.index(e) < events.index(agg)
        # its waste is its whole round: what its download_end / compute_end / upload_end carried
        mine = [x for x in events if x.get("device") == 1 and x["round"] == e["round"]]
        spent = {x["kind"]: x for x in mine}
        assert e["wasted_bytes"] == spent["download_end"]["bytes"] + spent["upload_end"]["bytes"]
        assert e["wasted_compute_s"] == pytest.approx(spent["compute_end"]["seconds"])
        assert e["wasted_energy_j"] == pytest.approx(sum(spent[k]["energy_j"] for k in
                                                          ("download_end", "compute_end", "upload_end")))
    summary = read_summary(run)
    assert summary["status"] == "complete"
    m = summary["methods"]["fedavg"]
    assert (m["diverged"], m["diverged_updates"], m["updates_aggregated"]) == (3, [[1, 0], [1, 1], [1, 2]], 6)
    assert m["status"] == "ok"
    # every device's perplexity stays finite, device 1's too: it went back to what it downloaded
    rows = [r for r in read_metrics(run) if r["device"] != "mean"]
    assert len(rows) == 3 * 4 and all(math.isfinite(r["ppl"]) for r in rows)


def test_a_method_whose_every_update_diverged_says_so(run_text, tmp_path, monkeypatch):
    run = run_with(run_text, tmp_path, monkeypatch, None)
    summary = read_summary(run)
    m = summary["methods"]["fedavg"]
    assert summary["status"] == "complete"  # the run went on
    assert (m["diverged"], m["updates_aggregated"], m["status"]) == (9, 0, "all_updates_diverged")
    # nothing was merged and every device is back to the download: the server model never moved
    rows = read_metrics(run)
    first = {r["device"]: r["ppl"] for r in rows if r["round"] == 0}
    last = {r["device"]: r["ppl"] for r in rows if r["round"] == 3}
    assert last == pytest.approx(first)
