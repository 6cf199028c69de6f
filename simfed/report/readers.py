"""Reading a run directory with pandas: metrics.csv, events.jsonl and summary.json.

A run directory is the single source of every report (simfed/run/results.py writes it; its
readers moved here). These readers never import torch. The frames are the API
(`RunResult`, what `simfed.run(...)` and `simfed.load_run(...)` return); `read_metrics`,
`read_summary` and `summarize_metrics` keep the row-dict forms older callers use.

Numbers are parsed with Python's `float` (exact round trip of what the writer printed with
`repr`), not pandas' fast C parser, which may differ in the last bit: reports stay byte-identical.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MEAN_DEVICE = "mean"  # the `device` of metrics.csv's mean row (simfed/run/results.py)
INT_COLUMNS = ("seed", "round", "bytes_up", "bytes_down")
FLOAT_COLUMNS = ("sim_time_s", "energy_j", "ppl", "acc", "ppl_se")  # ppl_se: absent in runs before it existed


def _float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _int(text: str) -> int:
    value = _float(text)
    return int(value) if math.isfinite(value) else 0


def metrics_frame(run_dir: str | Path) -> pd.DataFrame:
    """metrics.csv: one row per device per evaluation and a `mean` row; `device` stays a string
    ("0", "1", ..., "mean"); empty or unparsable numbers are NaN (integers: 0)."""
    frame = pd.read_csv(Path(run_dir) / "metrics.csv", dtype=str, keep_default_na=False)
    for col in INT_COLUMNS:
        frame[col] = frame[col].map(_int).astype("int64")
    for col in FLOAT_COLUMNS:
        frame[col] = frame[col].map(_float).astype("float64") if col in frame else math.nan
    return frame


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """metrics.csv as dicts with numbers parsed (empty or unparsable numbers → NaN; integers → 0)."""
    frame = metrics_frame(run_dir)
    records = frame.to_dict("records")
    for row in records:  # plain Python numbers, as the csv-module reader gave
        for col in INT_COLUMNS:
            row[col] = int(row[col])
        for col in FLOAT_COLUMNS:
            row[col] = float(row[col])
    return records


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    return summary_of(run_dir)


def _finite_mean(values: pd.Series) -> float:
    """Mean of the finite values (NaN and ±inf left out); NaN if there are none."""
    finite = values[np.isfinite(values.astype("float64"))]
    return float(finite.mean()) if len(finite) else math.nan


def summarize_metrics(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Per method, the final comparison: the last `mean` row of each seed (averaged over seeds)
    from metrics.csv, completed by the counters summary.json holds (dropouts, stragglers, ...).
    Works on an interrupted run too."""
    from simfed.run.results import SUMMARY_KEYS

    finals = final_rows(metrics_frame(run_dir))
    recorded = summary_of(run_dir).get("methods", {})
    methods = list(dict.fromkeys(finals["method"]))
    table: dict[str, dict[str, Any]] = {}
    for method in methods + [m for m in recorded if m not in methods]:
        rows = finals[finals["method"] == method]
        entry: dict[str, Any] = {key: None for key in SUMMARY_KEYS}
        if len(rows):
            entry.update(
                final_mean_ppl=_finite_mean(rows["ppl"]), final_mean_acc=_finite_mean(rows["acc"]),
                rounds=int(rows["round"].max()), sim_time_s=_finite_mean(rows["sim_time_s"]),
                bytes_up=_finite_mean(rows["bytes_up"]), bytes_down=_finite_mean(rows["bytes_down"]),
                energy_j=_finite_mean(rows["energy_j"]), seeds=int(len(rows)))
        for key, value in recorded.get(method, {}).items():
            if key != "seeds" and value is not None and not (key.startswith("final_") and len(rows)):
                entry[key] = value
        table[method] = entry
    return table


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


def final_rows(metrics: pd.DataFrame, device: str = MEAN_DEVICE) -> pd.DataFrame:
    """Per (method, seed), the row of `device` with the highest round (the final measurement; of
    rows with the same round the later one), in the order the (method, seed) pairs first appear."""
    rows = metrics[metrics["device"].astype(str) == device]
    last = rows.groupby(["method", "seed"], sort=False)["round"].transform("max")
    finals = rows[rows["round"] == last].drop_duplicates(["method", "seed"], keep="last")
    order = rows.drop_duplicates(["method", "seed"])[["method", "seed"]]
    return order.merge(finals, on=["method", "seed"], how="left")


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
