"""The paper-style results table: final test perplexity, mean (std) over seeds, per method and dataset.

Pure functions over `read_metrics` rows (metrics.csv as dicts), so a table can be rebuilt from any
run directory, finished or interrupted, and tested on hand-written files. The selection of final
rows and the statistics are pandas (simfed/report/readers.py `final_rows`, `Series.mean`/`std`).

- A seed's *final* perplexity is its last `mean` row (the highest round it reached): the mean
  over devices of each device's test perplexity, as the paper reports.
- Over seeds: the arithmetic mean and the *sample* standard deviation (n − 1 in the denominator;
  empty for a single seed). Seeds that reached different rounds are still pooled; `rounds` keeps
  the lowest final round so that an interrupted seed is visible.
- Best: the lowest mean perplexity of a column (ties all marked); rows without a number never win.

A column is one dataset: one run (`simfed report`) or several runs lined up (`simfed compare`).
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from simfed.report import readers

MEAN_DEVICE = "mean"  # the `device` of the mean-over-devices row (simfed.run.results.MEAN_DEVICE)
CSV_HEADER = ("dataset", "method", "mean_ppl", "std_ppl", "seeds", "best", "per_seed_ppl",
              "mean_acc", "rounds")


@dataclass(frozen=True)
class Cell:
    """One method on one dataset: its final perplexity over seeds."""

    values: tuple[float, ...]  # final mean-over-devices perplexity of each seed, in seed order
    seeds: tuple[int, ...]
    acc: float  # mean over seeds of the final mean-over-devices accuracy
    rounds: int  # the lowest final round over the seeds

    @property
    def mean(self) -> float:
        return mean(self.values)

    @property
    def std(self) -> float:
        return sample_std(self.values)


@dataclass
class Table:
    """Rows = methods (first-seen order), columns = datasets; `cells[(dataset, method)]`."""

    columns: list[str]
    methods: list[str]
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)

    def cell(self, dataset: str, method: str) -> Cell | None:
        return self.cells.get((dataset, method))

    def best(self, dataset: str) -> set[str]:
        """Methods with the lowest mean perplexity in the column (all of them on a tie)."""
        means = {m: c.mean for (d, m), c in self.cells.items() if d == dataset and math.isfinite(c.mean)}
        if not means:
            return set()
        low = min(means.values())
        return {m for m, v in means.items() if v == low}


# ---------------------------------------------------------------- statistics (pandas)

def _finite(values: Iterable[float]) -> pd.Series:
    series = pd.Series([v for v in values if v is not None], dtype="float64")
    return series[np.isfinite(series)]


def mean(values: Iterable[float]) -> float:
    finite = _finite(values)
    return float(finite.mean()) if len(finite) else math.nan


def sample_std(values: Iterable[float]) -> float:
    """Standard deviation with n − 1 in the denominator; NaN for fewer than two finite values."""
    finite = _finite(values)
    return float(finite.std(ddof=1)) if len(finite) >= 2 else math.nan


# ---------------------------------------------------------------- from metrics rows

def final_rows(rows: Sequence[dict[str, Any]], device: str = MEAN_DEVICE) -> dict[str, dict[int, dict[str, Any]]]:
    """Per method, per seed: the row of `device` with the highest round (later rows win ties)."""
    if not rows:
        return {}
    frame = pd.DataFrame(list(rows))
    frame["device"] = frame["device"].astype(str)
    frame["seed"] = frame["seed"].astype(int)
    frame["round"] = frame["round"].astype(int)
    finals = readers.final_rows(frame, device)
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for row in finals.to_dict("records"):
        out.setdefault(row["method"], {})[int(row["seed"])] = row
    return out


def final_cells(rows: Sequence[dict[str, Any]], device: str = MEAN_DEVICE) -> dict[str, Cell]:
    """Per method (first-seen order): its Cell over the seeds present in `rows`."""
    cells = {}
    for method, seeds in final_rows(rows, device).items():
        ordered = [seeds[s] for s in sorted(seeds)]
        cells[method] = Cell(
            values=tuple(float(r["ppl"]) for r in ordered),
            seeds=tuple(sorted(seeds)),
            acc=mean(float(r["acc"]) for r in ordered),
            rounds=min(int(r["round"]) for r in ordered),
        )
    return cells


def build_table(datasets: Sequence[tuple[str, Sequence[dict[str, Any]]]], device: str = MEAN_DEVICE) -> Table:
    """One column per (name, metrics rows); methods in the order they first appear."""
    table = Table(columns=[name for name, _ in datasets], methods=[])
    for name, rows in datasets:
        for method, cell in final_cells(rows, device).items():
            if method not in table.methods:
                table.methods.append(method)
            table.cells[(name, method)] = cell
    return table


def device_table(rows: Sequence[dict[str, Any]], names: dict[str, str] | None = None) -> Table:
    """Within one run: columns = devices (then `mean`), final perplexity per device over seeds."""
    devices = []
    for row in rows:
        d = str(row["device"])
        if d != MEAN_DEVICE and d not in devices:
            devices.append(d)
    names = names or {}
    table = Table(columns=[], methods=[])
    for d in devices + [MEAN_DEVICE]:
        label = names.get(d, d)
        table.columns.append(label)
        for method, cell in final_cells(rows, d).items():
            if method not in table.methods:
                table.methods.append(method)
            table.cells[(label, method)] = cell
    return table


# ---------------------------------------------------------------- rendering

def format_cell(cell: Cell | None, digits: int = 2, bold: bool = False) -> str:
    """`33.53 (0.42)`; one seed: `33.53`; best: `**33.53** (0.42)`; missing: `–`."""
    if cell is None or not math.isfinite(cell.mean):
        return "–"
    value = f"{cell.mean:.{digits}f}"
    if bold:
        value = f"**{value}**"
    if math.isfinite(cell.std):
        value += f" ({cell.std:.{digits}f})"
    return value


def to_markdown(table: Table, digits: int = 2, title: str = "method") -> str:
    """A GitHub Markdown table; the best of each column in bold."""
    best = {c: table.best(c) for c in table.columns}
    lines = [
        "| " + " | ".join([title, *table.columns]) + " |",
        "|" + "---|" * (len(table.columns) + 1),
    ]
    for method in table.methods:
        cells = [format_cell(table.cell(c, method), digits, method in best[c]) for c in table.columns]
        lines.append("| " + " | ".join([method, *cells]) + " |")
    return "\n".join(lines) + "\n"


def _num(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else ""


def to_csv(table: Table) -> str:
    """Long format, one line per (dataset, method): see CSV_HEADER; per-seed values joined by `;`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for column in table.columns:
        best = table.best(column)
        for method in table.methods:
            cell = table.cell(column, method)
            if cell is None:
                continue
            writer.writerow([
                column, method, _num(cell.mean), _num(cell.std), len(cell.values),
                int(method in best), ";".join(_num(v) for v in cell.values), _num(cell.acc), cell.rounds,
            ])
    return out.getvalue()


def seeds_note(table: Table) -> str:
    """One line saying how many seeds each column pooled (and flagging uneven ones)."""
    parts = []
    for column in table.columns:
        counts = sorted({len(c.values) for (d, _), c in table.cells.items() if d == column})
        parts.append(f"{column}: {'/'.join(map(str, counts)) or 0} seed(s)")
    return "; ".join(parts)
