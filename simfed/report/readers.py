"""Reading a run directory with pandas: metrics.csv, events.jsonl and summary.json as frames.

A run directory is the single source of every report (simfed/run/results.py writes it); these
readers never import torch. `RunResult` is what `simfed.run(...)` and `simfed.load_run(...)`
return.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

MEAN_DEVICE = "mean"  # the `device` of metrics.csv's mean row (simfed/run/results.py)
INT_COLUMNS = ("seed", "round", "bytes_up", "bytes_down")
FLOAT_COLUMNS = ("sim_time_s", "energy_j", "ppl", "acc")


def metrics_frame(run_dir: str | Path) -> pd.DataFrame:
    """metrics.csv: one row per device per evaluation and a `mean` row; `device` stays a string
    ("0", "1", ..., "mean"); empty or unparsable numbers are NaN (integers: 0)."""
    frame = pd.read_csv(Path(run_dir) / "metrics.csv", dtype=str, keep_default_na=False)
    for col in INT_COLUMNS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").fillna(0).astype("int64")
    for col in FLOAT_COLUMNS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return frame


def events_frame(run_dir: str | Path) -> pd.DataFrame:
    """events.jsonl, one row per simulated event (columns: the union of the events' keys)."""
    path = Path(run_dir) / "events.jsonl"
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    return pd.read_json(path, lines=True, dtype=False)


def summary_of(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def mean_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    return metrics[metrics["device"] == MEAN_DEVICE]


def final_rows(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per (method, seed), the mean row of the highest round (the final measurement)."""
    means = mean_rows(metrics)
    last = means.groupby(["method", "seed"], sort=False)["round"].transform("max")
    return means[means["round"] == last].drop_duplicates(["method", "seed"], keep="last")


@dataclass(frozen=True)
class RunResult:
    """A run directory and its tables, read on demand."""

    path: Path

    @property
    def metrics(self) -> pd.DataFrame:
        return metrics_frame(self.path)

    @property
    def events(self) -> pd.DataFrame:
        return events_frame(self.path)

    @property
    def summary(self) -> dict[str, Any]:
        return summary_of(self.path)

    def final(self) -> pd.DataFrame:
        """Per method and seed, the final mean row (ppl, acc, time, bytes, energy)."""
        return final_rows(self.metrics).reset_index(drop=True)

    def __repr__(self) -> str:
        return f"RunResult({str(self.path)!r})"
