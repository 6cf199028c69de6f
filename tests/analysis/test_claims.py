"""analysis/claims.py on hand-written run directories: each claim's paired test and verdict.

The p-values are worked out by hand from the exact null distribution of Wilcoxon's signed-rank
statistic: with n non-zero differences of distinct sizes, all on the claimed side, W+ is the
largest of the 2^n equally likely sign patterns, so the one-sided p is 1/2^n; with all but the
smallest on the claimed side, two patterns (that one and the all-positive one) reach W+, p = 2/2^n.
"""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from simfed.run.results import METRICS_HEADER

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def claims():
    spec = importlib.util.spec_from_file_location("analysis_claims", ROOT / "analysis" / "claims.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(path: Path, name: str, ppl: dict[tuple[str, int, str], list[float]]) -> Path:
    """A run directory: ppl[(method, seed, device)] = perplexity at rounds 1, 2, ...; the mean row
    of each (method, seed, round) is the mean over its devices."""
    path.mkdir(parents=True)
    (path / "scenario.resolved.yaml").write_text(f"name: {name}\n")
    rows = [METRICS_HEADER]
    by_round: dict[tuple[str, int, int], list[float]] = {}
    for (m, s, d), values in ppl.items():
        for r, v in enumerate(values, start=1):
            rows.append((m, s, r, 60.0 * r, 0, 0, 0.0, d, v, 0.3, ""))
            by_round.setdefault((m, s, r), []).append(v)
    for (m, s, r), values in by_round.items():
        rows.append((m, s, r, 60.0 * r, 0, 0, 0.0, "mean", sum(values) / len(values), 0.3, ""))
    with open(path / "metrics.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


SEEDS, DEVICES = (0, 1, 2), ("0", "1", "2", "3")


def run_lines(claims, capsys, run_dir: Path) -> str:
    assert claims.main([str(run_dir)]) == 0
    return capsys.readouterr().out


def test_table1_holds_when_1g1s_sits_near_the_better(claims, capsys, tmp_path):
    # 2S = 50 + dev + seed, 2G = 2S + 4: midpoint 2S + 2; 1G1S = 2S + 0.1·(i+1), i = 0..11 the
    # (seed, device) index: d = 0.1·(i+1) − 2 < 0 in all 12 pairs, distinct → p = 1/2^12
    ppl = {}
    for i, (s, d) in enumerate((s, d) for s in SEEDS for d in DEVICES):
        base = 50.0 + int(d) + s
        ppl[("comigs-2s", s, d)] = [base]
        ppl[("comigs-2g", s, d)] = [base + 4.0]
        ppl[("comigs-1g1s", s, d)] = [base + 0.1 * (i + 1)]
    out = run_lines(claims, capsys, write_run(tmp_path / "r", "table1_multilingual", ppl))
    assert f"HOLDS (p = {1 / 2 ** 12:.1e})" in out
    assert "12 pairs" in out and "better: 2S" in out


def test_table1_does_not_hold_when_1g1s_sits_near_the_worse(claims, capsys, tmp_path):
    ppl = {}
    for i, (s, d) in enumerate((s, d) for s in SEEDS for d in DEVICES):
        base = 50.0 + int(d) + s
        ppl[("comigs-2s", s, d)] = [base]
        ppl[("comigs-2g", s, d)] = [base + 4.0]
        ppl[("comigs-1g1s", s, d)] = [base + 3.5 + 0.01 * i]
    out = run_lines(claims, capsys, write_run(tmp_path / "r", "table1_ood", ppl))
    assert "claim '1G1S tracks the better of 2G/2S' → DOES NOT HOLD" in out


def test_table4_pools_both_variants(claims, capsys, tmp_path):
    # 24 pairs (2 variants × 3 seeds × 4 devices); -tr worse by 0.01·(i+1) except the smallest,
    # pair 0, where it is better by 0.01: W+ = 300 − 1, reached by 2 of 2^24 patterns
    ppl, i = {}, 0
    for base in ("comigs-1g1s", "comigs-2s"):
        for s in SEEDS:
            for d in DEVICES:
                v = 40.0 + int(d) + s
                gap = -0.01 if i == 0 else 0.01 * (i + 1)
                ppl[(base, s, d)] = [v]
                ppl[(f"{base}-tr", s, d)] = [v + gap]
                i += 1
    out = run_lines(claims, capsys, write_run(tmp_path / "r", "table4_multilingual", ppl))
    assert f"HOLDS (p = {2 / 2 ** 24:.1e})" in out
    assert "24 pairs" in out and "12 pairs" in out  # pooled, and each variant alone


def test_overprovisioned_with_three_seeds_cannot_be_significant(claims, capsys, tmp_path):
    # device 0 only, one pair a seed: local and local-moe worse than 1gxs in all 3 seeds, yet
    # p = 1/2^3 = 0.125 ≥ 0.05: right direction, not significant
    ppl = {}
    for s in SEEDS:
        for d in DEVICES:
            ppl[("comigs-1gxs", s, d)] = [80.0, 60.0 + s]
            ppl[("local", s, d)] = [80.0, 70.0 + 2 * s] if d == "0" else [80.0, 55.0]
            ppl[("local-moe", s, d)] = [80.0, 75.0 + s] if d == "0" else [80.0, 55.0]
    out = run_lines(claims, capsys, write_run(tmp_path / "r", "dataqty_overprovisioned_multilingual", ppl))
    assert "right direction, not significant (p = 0.125, min attainable 0.125)" in out
    assert "rise from its best round to the last +0.00" in out


def test_rich_specialists_tests_the_data_poor_devices(claims, capsys, tmp_path):
    # devices 1..3 × 3 seeds: 1g1s worse than 1gxs by 0.1·(j+1), j = 0..8 → p = 1/2^9; device
    # 0 (where 1gxs is much worse) is not a data-poor device and must not count
    ppl, j = {}, 0
    for s in SEEDS:
        ppl[("comigs-1gxs", s, "0")] = [30.0]
        ppl[("comigs-1g1s", s, "0")] = [20.0]
        for d in ("1", "2", "3"):
            ppl[("comigs-1gxs", s, d)] = [45.0]
            ppl[("comigs-1g1s", s, d)] = [45.0 + 0.1 * (j + 1)]
            j += 1
    out = run_lines(claims, capsys, write_run(tmp_path / "r", "dataqty_rich_specialists_multilingual", ppl))
    assert "9 pairs" in out and f"HOLDS (p = {1 / 2 ** 9:.3g})" in out


def test_a_combined_study_runs_both_checks(claims):
    assert claims.checks_for("table1_table4_multilingual") == [claims.table1, claims.table4]
    assert claims.checks_for("dataqty_overprovisioned_multilingual_cpu") == [claims.overprovisioned]
    assert claims.checks_for("table2_multilingual") == []


def test_a_study_without_a_claim(claims, capsys, tmp_path):
    out = run_lines(claims, capsys, write_run(tmp_path / "r", "table2_multilingual", {("hetlora", 0, "0"): [10.0]}))
    assert "no claim is checked on this study" in out
