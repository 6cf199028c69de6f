"""The run directory: rows flushed as written, status on every ending, plots from metrics.csv."""
from __future__ import annotations

import csv
import json
from datetime import datetime

import pytest

from simfed.report.plots import mean_curves, plot_closed_run, plot_run
from simfed.run.results import METRICS_HEADER, RunDirectory
from simfed.report.readers import read_metrics, summarize_metrics
from simfed.sim.events import SimEvent

NOW = datetime(2025, 1, 2, 3, 4, 5)


def make(tmp_path, seeds=(0,)):
    return RunDirectory.create(tmp_path, "demo", "name: demo\n", seeds=seeds, now=NOW)


def evaluate(run, method, seed, rnd, ppls):
    per_device = {d: (p, 0.1 * d) for d, p in enumerate(ppls)}
    return run.log_evaluation(method, seed, rnd, sim_time_s=600.0 * rnd, bytes_up=1000 * rnd,
                              bytes_down=2000 * rnd, energy_j=5.0 * rnd, per_device=per_device)


def test_standard_errors_per_device_and_of_the_mean(tmp_path):
    # devices with SE 3 and 4: the mean of two independent estimates has SE √(3² + 4²) / 2 = 2.5
    with make(tmp_path) as run:
        mean = run.log_evaluation("comigs", 0, 1, 60.0, 10, 20, 1.0, per_device={0: (10.0, 0.5, 3.0), 1: (30.0, 0.4, 4.0)})
    assert mean["ppl_se"] == 2.5
    rows = read_metrics(run.path)
    assert [r["ppl_se"] for r in rows] == [3.0, 4.0, 2.5]
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["methods"]["comigs"]["final_mean_ppl_se"] == 2.5


def test_layout_and_collision_safe_names(tmp_path):
    a, b = make(tmp_path), make(tmp_path)
    assert a.path == tmp_path / "demo" / "20250102-030405"
    assert b.path == tmp_path / "demo" / "20250102-030405-2"
    assert (a.path / "scenario.resolved.yaml").read_text() == "name: demo\n"
    assert json.loads((a.path / "summary.json").read_text())["status"] == "running"
    a.close(), b.close()


def test_rows_are_readable_while_the_writer_is_open(tmp_path):
    run = make(tmp_path)
    mean = evaluate(run, "comigs", 0, 1, [10.0, 30.0])
    assert mean["ppl"] == 20.0
    with open(run.path / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == METRICS_HEADER
    assert rows[1:] == [
        ["comigs", "0", "1", "600.0", "1000", "2000", "5.0", "0", "10.0", "0.0", ""],
        ["comigs", "0", "1", "600.0", "1000", "2000", "5.0", "1", "30.0", "0.1", ""],
        ["comigs", "0", "1", "600.0", "1000", "2000", "5.0", "mean", "20.0", "0.05", ""],
    ]  # no standard errors given: empty ppl_se cells
    run.log_event("comigs", 0, SimEvent(t=1.5, kind="upload_end", round=0, device=3, bytes=10))
    run.log_event("comigs", 0, {"t": 2.0, "kind": "round_end", "round": 0, "device": None})
    lines = (run.path / "events.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == {"method": "comigs", "seed": 0, "t": 1.5, "kind": "upload_end",
                                    "round": 0, "device": 3, "bytes": 10}
    assert len(lines) == 2
    run.close()


def test_complete_run_summary(tmp_path):
    with make(tmp_path) as run:
        evaluate(run, "comigs", 0, 1, [10.0, 30.0])
        evaluate(run, "comigs", 0, 2, [8.0, 12.0])
        run.finish_method("comigs", 0, {"sim_time_s": 1300.0, "bytes_up": 2000, "dropouts": 3,
                                        "rounds": 2}, measured_model="tiny-gpt2, 1.2M params")
        on_disk = json.loads((run.path / "summary.json").read_text())
        assert on_disk["status"] == "running" and on_disk["methods"]["comigs"]["dropouts"] == 3
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["error"] is None
    comigs = summary["methods"]["comigs"]
    assert comigs["final_mean_ppl"] == 10.0
    assert comigs["measured_model"] == "tiny-gpt2, 1.2M params"
    assert comigs["stragglers"] is None and comigs["finished"] is True
    assert [p.name for p in plot_closed_run(run)] == ["ppl_vs_time.png", "ppl_vs_bytes.png"]  # no events: no timeline
    assert (run.path / "ppl_vs_time.png").stat().st_size > 0
    assert (run.path / "ppl_vs_bytes.png").stat().st_size > 0


def test_a_plot_that_fails_is_recorded_after_the_run_ended(tmp_path, monkeypatch):
    import simfed.report.plots as plots

    with make(tmp_path) as run:
        evaluate(run, "comigs", 0, 1, [10.0, 30.0])

    def broken(path):
        raise ValueError("no canvas")

    monkeypatch.setattr(plots, "plot_run", broken)
    assert plots.plot_closed_run(run) == []
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["error"] == "plots failed: no canvas"


def test_interrupted_run_keeps_everything(tmp_path):
    with pytest.raises(KeyboardInterrupt) as info:
        with make(tmp_path) as run:
            evaluate(run, "comigs", 0, 1, [10.0, 30.0])
            run.finish_method("comigs", 0, {"rounds": 1})
            evaluate(run, "hetlora", 0, 1, [50.0, 70.0])
            raise KeyboardInterrupt
    assert info.value.run_dir == run.path
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["methods"]["hetlora"]["finished"] is False
    assert summary["methods"]["hetlora"]["final_mean_ppl"] == 60.0
    assert summary["methods"]["hetlora"]["bytes_down"] == 2000
    assert plot_closed_run(run) and (run.path / "ppl_vs_time.png").exists()  # from the rows kept


def test_failed_run_records_the_error(tmp_path):
    with pytest.raises(RuntimeError):
        with make(tmp_path) as run:
            raise RuntimeError("out of memory")
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == "RuntimeError: out of memory"


def test_several_seeds_are_averaged(tmp_path):
    with make(tmp_path, seeds=(0, 1)) as run:
        for seed, ppl in ((0, 10.0), (1, 20.0)):
            evaluate(run, "comigs", seed, 1, [ppl, ppl])
            run.finish_method("comigs", seed, {"dropouts": seed + 1})
    comigs = json.loads((run.path / "summary.json").read_text())["methods"]["comigs"]
    assert comigs["final_mean_ppl"] == 15.0 and comigs["dropouts"] == 1.5
    assert set(comigs["seeds"]) == {"0", "1"} and comigs["seeds"]["1"]["final_mean_ppl"] == 20.0


def test_summarize_metrics(tmp_path):
    with make(tmp_path, seeds=(0, 1)) as run:
        for seed in (0, 1):
            evaluate(run, "comigs", seed, 1, [10.0, 30.0])
            evaluate(run, "comigs", seed, 2, [8.0 + seed, 12.0 + seed])
            run.finish_method("comigs", seed, {"stragglers": 2 * seed})
        evaluate(run, "hetlora", 0, 1, [40.0, 40.0])
    table = summarize_metrics(run.path)
    assert list(table) == ["comigs", "hetlora"]
    assert table["comigs"]["final_mean_ppl"] == 10.5
    assert table["comigs"]["rounds"] == 2 and table["comigs"]["stragglers"] == 1.0
    assert table["hetlora"]["final_mean_ppl"] == 40.0 and table["hetlora"]["dropouts"] is None


def test_plots_from_a_hand_written_metrics_csv(tmp_path):
    rows = [METRICS_HEADER]
    for method, base in (("comigs", 40.0), ("hetlora", 60.0)):
        for seed in (0, 1):
            for rnd in (1, 2, 3):
                ppl = base / rnd + seed
                rows.append((method, seed, rnd, 3600.0 * rnd, 1e6 * rnd, 2e6 * rnd, 1.0, 0, ppl, 0.2))
                rows.append((method, seed, rnd, 3600.0 * rnd, 1e6 * rnd, 2e6 * rnd, 1.0, "mean", ppl, 0.2))
    with open(tmp_path / "metrics.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    curves = mean_curves(read_metrics(tmp_path))
    assert [p["ppl"] for p in curves["comigs"]] == [40.5, 20.5, 40 / 3 + 0.5]
    assert curves["hetlora"][1]["hours"] == 2.0 and curves["hetlora"][1]["mb"] == 6.0
    paths = plot_run(tmp_path)
    assert [p.name for p in paths] == ["ppl_vs_time.png", "ppl_vs_bytes.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_of_an_empty_run(tmp_path):
    (tmp_path / "metrics.csv").write_text(",".join(METRICS_HEADER) + "\n")
    assert all(p.exists() for p in plot_run(tmp_path))
