"""Time-to-target on a hand-written metrics.csv (hand-computed answers) and on a tiny real run."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from simfed.report.readers import metrics_frame
from simfed.report.targets import run_targets, time_to_target, to_markdown
from simfed.run.results import METRICS_HEADER
from tests.run.conftest import run_text  # noqa: F401 - the fixture, shared with the runner tests

# (method, seed, round, sim_time_s, bytes_up, bytes_down, energy_j, mean ppl); device 0 = mean − 1, device 1 = mean + 1
MEANS = [
    ("a", 0, 0, 0.0, 0, 0, 0.0, 10.0), ("a", 0, 1, 100.0, 1000, 2000, 5.0, 8.0), ("a", 0, 2, 200.0, 2000, 4000, 10.0, 6.0),
    ("a", 1, 0, 0.0, 0, 0, 0.0, 10.0), ("a", 1, 1, 120.0, 1100, 2100, 6.0, 7.0), ("a", 1, 2, 260.0, 2300, 4300, 12.0, 5.0),
    ("b", 0, 0, 0.0, 0, 0, 0.0, 10.0), ("b", 0, 1, 50.0, 500, 600, 2.0, 9.0), ("b", 0, 2, 90.0, 900, 1000, 4.0, 8.5),
    ("b", 1, 0, 0.0, 0, 0, 0.0, 10.0), ("b", 1, 1, 60.0, 600, 700, 3.0, 9.5), ("b", 1, 2, 100.0, 1000, 1100, 5.0, 9.0),
    ("p", 0, 0, 0.0, 0, 0, 0.0, 10.0), ("p", 0, 2, 0.0, 0, 0, 0.0, 10.0),  # never moves (like `pretrained`)
]


def write_metrics(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(METRICS_HEADER)
        for method, seed, rnd, t, up, down, e, ppl in MEANS:
            for device, value in ((0, ppl - 1), (1, ppl + 1), ("mean", ppl)):
                w.writerow([method, seed, rnd, t, up, down, e, device, value, 0.5])
    return path


def test_default_target_is_the_worst_final_of_the_methods_that_moved(tmp_path: Path) -> None:
    result = time_to_target(metrics_frame(write_metrics(tmp_path)))
    # finals over seeds: a (6+5)/2 = 5.5, b (8.5+9)/2 = 8.75, p 10 (never moved: left out)
    assert result["targets"] == [8.75]
    a = result["methods"]["a"]["8.75"]["mean"]
    # a reaches <= 8.75 at round 1 in both seeds: t = 100 and 120 -> mean 110, std sqrt(200)
    assert a["reached"] and a["seeds_reached"] == 2
    assert a["sim_time_s"] == 110.0 and a["sim_time_s_std"] == pytest.approx(math.sqrt(200))
    assert a["bytes_up"] == 1050.0 and a["bytes_down"] == 2050.0 and a["energy_j"] == 5.5 and a["round"] == 1.0
    b = result["methods"]["b"]["8.75"]["mean"]
    # b: seed 0 at round 2 (8.5, t = 90); seed 1 ends at 9 > 8.75
    assert b["seeds_reached"] == 1 and b["sim_time_s"] == 90.0 and b["sim_time_s_std"] is None
    assert result["methods"]["p"]["8.75"]["mean"] == {"reached": False, "seeds_reached": 0, "seeds": 1}
    # device 1 (mean + 1) of b: 9.5 at best in seed 0 -> not reached; device 0 of b: seed 0 round 1 (8), seed 1 round 1 (8.5)
    assert not result["methods"]["b"]["8.75"]["devices"]["1"]["reached"]
    d0 = result["methods"]["b"]["8.75"]["devices"]["0"]
    assert d0["seeds_reached"] == 2 and d0["sim_time_s"] == 55.0 and d0["bytes_up"] == 550.0


def test_given_targets_and_not_reached(tmp_path: Path) -> None:
    result = time_to_target(metrics_frame(write_metrics(tmp_path)), [5.0, 9.0])
    assert result["targets"] == [5.0, 9.0]
    # 5.0: only a's seed 1 at round 2 (t = 260)
    five = result["methods"]["a"]["5"]["mean"]
    assert five["seeds_reached"] == 1 and five["sim_time_s"] == 260.0
    assert not result["methods"]["b"]["5"]["mean"]["reached"]
    # 9.0: b seed 0 at round 1 (t = 50), seed 1 at round 2 (t = 100): mean 75
    assert result["methods"]["b"]["9"]["mean"]["sim_time_s"] == 75.0
    text = to_markdown(result)
    assert "| b | not reached | – | – | – | – | 0/2 |" in text
    assert "| a | 260.0 | 0.00 | 0.00 | 12.0 | 2.0 | 1/2 |" in text


def test_a_tiny_run_records_time_to_target_in_summary_checked_against_metrics_csv(run_text, tmp_path: Path) -> None:
    text = f"""
name: ttt
model: tiny-gpt2
data: {{users: [toy:a, toy:b], train_tokens: 3000, val_tokens: 800, test_tokens: 800, cache_dir: {tmp_path / 'cache'}}}
training: {{local_steps: 3, batch_size: 2, seq_len: 32, eval_windows: 4, lr: 2.0e-2}}
methods:
  - {{name: fedavg, kind: fedavg, rank: 4}}
  - {{name: hetlora, kind: hetlora, rank: 2, min_rank: 2, max_rank: 8}}
world:
  fleet: [{{count: 3, tier: phone_mid, link: lte}}]
  server: {{rounds: 3, target_per_round: 2, over_selection: 1.3, deadline_s: 600}}
"""
    run = run_text(text, tmp_path / "ttt.yaml", tmp_path / "runs")
    summary = json.loads((run / "summary.json").read_text())
    recorded = summary["time_to_target"]
    # by hand from metrics.csv: the worst final mean ppl, then each method's first mean row at or below it
    with open(run / "metrics.csv", newline="") as f:
        means = [r for r in csv.DictReader(f) if r["device"] == "mean"]
    finals = {}
    for r in means:
        finals[r["method"]] = float(r["ppl"])  # rows are written round by round: the last one is final
    target = max(finals.values())
    assert recorded["targets"] == [target]
    key = f"{target:.4g}"
    for method in ("fedavg", "hetlora"):
        first = next(r for r in means if r["method"] == method and float(r["ppl"]) <= target)
        entry = recorded["methods"][method][key]["mean"]
        assert entry["reached"]
        assert entry["sim_time_s"] == float(first["sim_time_s"]) and entry["round"] == int(first["round"])
        assert entry["bytes_up"] == int(first["bytes_up"]) and entry["energy_j"] == float(first["energy_j"])
    assert run_targets(run) == recorded
