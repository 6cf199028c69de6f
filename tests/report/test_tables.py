"""The paper-style table from hand-written metrics.csv files: hand-computed means and sample stds."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from simfed.cli import main
from simfed.report.tables import build_table, device_table, final_cells, sample_std, to_csv, to_markdown
from simfed.run.results import METRICS_HEADER
from simfed.report.readers import read_metrics

# (method, seed, round, device, ppl, acc): final rounds are 2; round-1 rows must be ignored
ROWS_A = [
    ("fedavg", 0, 1, "mean", 5.0, 0.1), ("fedavg", 0, 2, 0, 8.0, 0.2), ("fedavg", 0, 2, 1, 12.0, 0.4),
    ("fedavg", 0, 2, "mean", 10.0, 0.3),
    ("fedavg", 1, 2, 0, 11.0, 0.3), ("fedavg", 1, 2, 1, 13.0, 0.3), ("fedavg", 1, 2, "mean", 12.0, 0.3),
    ("fedavg", 2, 2, 0, 13.0, 0.5), ("fedavg", 2, 2, 1, 15.0, 0.5), ("fedavg", 2, 2, "mean", 14.0, 0.5),
    ("fedavg", 2, 1, "mean", 1.0, 0.9),  # an earlier round written late: still not the final
    ("comigs", 0, 2, "mean", 9.0, 0.4), ("comigs", 1, 2, "mean", 12.0, 0.4), ("comigs", 2, 2, "mean", 12.0, 0.4),
    ("local", 0, 2, "mean", 20.0, 0.1),
]
ROWS_B = [
    ("fedavg", 0, 3, "mean", 30.0, 0.1), ("fedavg", 1, 3, "mean", 34.0, 0.1),
    ("comigs", 0, 3, "mean", 33.0, 0.1), ("comigs", 1, 3, "mean", 33.0, 0.1),
    ("pcl", 0, 3, "mean", float("nan"), 0.0),
]


def write_run(root: Path, scenario: str, rows) -> Path:
    run = root / scenario / "20250101-000000"
    run.mkdir(parents=True)
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(METRICS_HEADER)
        for method, seed, rnd, device, ppl, acc in rows:
            w.writerow([method, seed, rnd, 60.0 * rnd, 100 * rnd, 200 * rnd, 1.0, device, ppl, acc])
    (run / "summary.json").write_text('{"scenario": "%s", "status": "complete", "methods": {}}' % scenario)
    (run / "events.jsonl").write_text("")
    return run


def test_sample_std_by_hand():
    assert sample_std([10.0, 12.0, 14.0]) == pytest.approx(2.0)
    assert sample_std([9.0, 12.0, 12.0]) == pytest.approx(math.sqrt(3.0))
    assert math.isnan(sample_std([20.0])) and math.isnan(sample_std([]))


def test_final_cells_take_each_seeds_last_mean_row(tmp_path):
    run = write_run(tmp_path, "multilingual", ROWS_A)
    cells = final_cells(read_metrics(run))
    assert list(cells) == ["fedavg", "comigs", "local"]
    assert cells["fedavg"].values == (10.0, 12.0, 14.0) and cells["fedavg"].seeds == (0, 1, 2)
    assert cells["fedavg"].mean == pytest.approx(12.0) and cells["fedavg"].std == pytest.approx(2.0)
    assert cells["fedavg"].acc == pytest.approx((0.3 + 0.3 + 0.5) / 3) and cells["fedavg"].rounds == 2
    assert cells["comigs"].mean == pytest.approx(11.0) and cells["comigs"].std == pytest.approx(math.sqrt(3))
    assert cells["local"].mean == 20.0 and math.isnan(cells["local"].std)


def test_markdown_marks_the_best_and_omits_std_of_one_seed(tmp_path):
    table = build_table([("multilingual", read_metrics(write_run(tmp_path, "multilingual", ROWS_A)))])
    md = to_markdown(table).splitlines()
    assert md[0] == "| method | multilingual |"
    assert md[2] == "| fedavg | 12.00 (2.00) |"
    assert md[3] == "| comigs | **11.00** (1.73) |"
    assert md[4] == "| local | 20.00 |"


def test_per_device_table(tmp_path):
    rows = read_metrics(write_run(tmp_path, "multilingual", ROWS_A))
    table = device_table(rows, {"0": "0:de", "1": "1:fr"})
    assert table.columns == ["0:de", "1:fr", "mean"]
    assert table.cell("0:de", "fedavg").mean == pytest.approx((8 + 11 + 13) / 3)
    assert table.cell("1:fr", "fedavg").std == pytest.approx(sample_std([12.0, 13.0, 15.0]))
    assert table.cell("0:de", "comigs") is None  # no per-device rows written for it
    assert table.best("mean") == {"comigs"}


def test_several_runs_line_up_and_csv_is_long_format(tmp_path):
    a = read_metrics(write_run(tmp_path, "multilingual", ROWS_A))
    b = read_metrics(write_run(tmp_path, "domains", ROWS_B))
    table = build_table([("multilingual", a), ("domains", b)])
    assert table.methods == ["fedavg", "comigs", "local", "pcl"]
    assert table.best("domains") == {"fedavg"}  # 32 < 33; a NaN never wins
    md = to_markdown(table).splitlines()
    assert md[2] == "| fedavg | 12.00 (2.00) | **32.00** (2.83) |"
    assert md[4] == "| local | 20.00 | – |"
    assert md[5] == "| pcl | – | – |"
    lines = list(csv.DictReader(to_csv(table).splitlines()))
    fed_b = next(r for r in lines if r["dataset"] == "domains" and r["method"] == "fedavg")
    assert float(fed_b["mean_ppl"]) == 32.0 and float(fed_b["std_ppl"]) == pytest.approx(math.sqrt(8))
    assert fed_b["seeds"] == "2" and fed_b["best"] == "1" and fed_b["per_seed_ppl"] == "30.0;34.0"
    local_a = next(r for r in lines if r["dataset"] == "multilingual" and r["method"] == "local")
    assert local_a["std_ppl"] == "" and local_a["best"] == "0"
    assert not any(r["dataset"] == "multilingual" and r["method"] == "pcl" for r in lines)


def test_report_command_writes_markdown_and_csv(tmp_path, capsys):
    run = write_run(tmp_path, "multilingual", ROWS_A)
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "| comigs | **11.00** (1.73) |" in out
    md = (run / "report.md").read_text()
    assert "| fedavg | 12.00 (2.00) |" in md and "## Per device" in md
    assert (run / "report.csv").read_text().startswith("dataset,method,mean_ppl,std_ppl")
    assert (run / "ppl_vs_time.png").exists()


def test_compare_command(tmp_path, capsys):
    a = write_run(tmp_path, "multilingual", ROWS_A)
    b = write_run(tmp_path, "domains", ROWS_B)
    out = tmp_path / "tables" / "table1"
    assert main(["compare", str(a), str(b), "--out", str(out) + ".md"]) == 0
    printed = capsys.readouterr().out
    assert "| method | multilingual | domains |" in printed
    assert (tmp_path / "tables" / "table1.md").read_text().startswith("| method | multilingual | domains |")
    assert "domains,fedavg,32.0" in (tmp_path / "tables" / "table1.csv").read_text()


def test_compare_names_two_runs_of_one_scenario_apart(tmp_path, capsys):
    a = write_run(tmp_path / "x", "multilingual", ROWS_A)
    b = write_run(tmp_path / "y", "multilingual", ROWS_B)
    b = b.rename(b.parent / "20250102-000000")
    assert main(["compare", str(a), str(b)]) == 0
    assert "| method | multilingual (20250101-000000) | multilingual (20250102-000000) |" in capsys.readouterr().out


def test_compare_rejects_a_non_run(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
