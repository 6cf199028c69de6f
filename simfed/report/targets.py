"""Time-to-target: the simulated time, bytes and energy at which perplexity first reaches a target.

The headline metric of systems FL papers (FedScale logs accuracy against its virtual clock): for
each method, seed and target T, the first evaluation (lowest round) whose mean-over-devices test
perplexity is <= T gives `sim_time_s`, `bytes_up`, `bytes_down`, `energy_j` (metrics.csv's
cumulative counters at that evaluation) and the round. The same per device, on each device's own
perplexity. Over seeds: mean and sample std (n − 1) of the seeds that reached T, and how many did;
a method no seed of which reaches T is "not reached".

Targets: the scenario's `report.targets`, else one — the worst final mean perplexity among the
methods that trained (a method whose final mean equals its round-0 mean, like `pretrained`, never
moved and would make the target trivial), so that every other method is timed to where the worst
one ended.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from simfed.report.readers import MEAN_DEVICE, final_rows, mean_rows, metrics_frame

COSTS = ("sim_time_s", "bytes_up", "bytes_down", "energy_j", "round")


def default_targets(metrics: pd.DataFrame) -> list[float]:
    """[the worst final mean perplexity among methods that moved from round 0], or [] if none."""
    means = mean_rows(metrics)
    finals = final_rows(metrics).groupby("method", sort=False)["ppl"].mean()
    first = means[means["round"] == means.groupby(["method", "seed"])["round"].transform("min")]
    start = first.groupby("method", sort=False)["ppl"].mean()
    moved = finals[[not math.isclose(finals[m], start.get(m, math.nan)) for m in finals.index]]
    moved = moved[moved.notna()]
    return [float(moved.max())] if len(moved) else []


def first_reached(metrics: pd.DataFrame, target: float, device: str = MEAN_DEVICE) -> pd.DataFrame:
    """Per (method, seed), the first evaluation of `device` with ppl <= target: COSTS columns;
    (method, seed) pairs that never reach it are absent."""
    rows = metrics[metrics["device"] == device].sort_values(["method", "seed", "round"], kind="stable")
    hit = rows[rows["ppl"] <= target]
    return hit.groupby(["method", "seed"], sort=False).head(1)[["method", "seed", *COSTS]]


def _over_seeds(hit: pd.DataFrame, method: str, n_seeds: int) -> dict[str, Any]:
    mine = hit[hit["method"] == method]
    if mine.empty:
        return {"reached": False, "seeds_reached": 0, "seeds": n_seeds}
    out: dict[str, Any] = {"reached": True, "seeds_reached": int(len(mine)), "seeds": n_seeds}
    for col in COSTS:
        values = mine[col].astype("float64")
        out[col] = float(values.mean())
        out[f"{col}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
    return out


def time_to_target(metrics: pd.DataFrame, targets: Sequence[float] | None = None) -> dict[str, Any]:
    """{"targets": [...], "methods": {method: {"<T>": {mean: entry, devices: {d: entry}}}}} where an
    entry is `_over_seeds`'s: reached, seeds_reached, seeds, and mean / _std of each cost."""
    targets = list(targets) if targets else default_targets(metrics)
    methods = list(dict.fromkeys(metrics["method"]))
    seeds = metrics.groupby("method", sort=False)["seed"].nunique()
    devices = [d for d in dict.fromkeys(metrics["device"]) if d != MEAN_DEVICE]
    out: dict[str, Any] = {"targets": targets, "methods": {m: {} for m in methods}}
    for target in targets:
        key = format_target(target)
        mean_hit = first_reached(metrics, target)
        device_hits = {d: first_reached(metrics, target, d) for d in devices}
        for m in methods:
            out["methods"][m][key] = {
                "mean": _over_seeds(mean_hit, m, int(seeds[m])),
                "devices": {d: _over_seeds(h, m, int(seeds[m])) for d, h in device_hits.items()},
            }
    return out


def format_target(target: float) -> str:
    return f"{target:.4g}"


def run_targets(run_dir: str | Path, targets: Sequence[float] | None = None) -> dict[str, Any]:
    """`time_to_target` of a run directory; targets default to its scenario's report.targets."""
    if targets is None:
        targets = scenario_targets(run_dir)
    return time_to_target(metrics_frame(run_dir), targets)


def scenario_targets(run_dir: str | Path) -> list[float] | None:
    """report.targets of the run's scenario.resolved.yaml (None: unset or unreadable)."""
    import yaml

    path = Path(run_dir) / "scenario.resolved.yaml"
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError:
        return None
    targets = (doc.get("report") or {}).get("targets")
    return [float(t) for t in targets] if targets else None


# ---------------------------------------------------------------- rendering

def _pm(entry: dict[str, Any], col: str, scale: float, digits: int) -> str:
    value = f"{entry[col] / scale:.{digits}f}"
    std = entry.get(f"{col}_std")
    return value + (f" ({std / scale:.{digits}f})" if std is not None else "")


def to_markdown(result: dict[str, Any]) -> str:
    """Per target, a table: method, simulated time (s), bytes up / down (MB), energy (J), round,
    seeds that reached it; mean (sample std) over those seeds, or "not reached"."""
    if not result["targets"]:
        return "No target: no method moved from its round-0 perplexity.\n"
    lines = []
    for target in result["targets"]:
        key = format_target(target)
        lines += [f"Target mean perplexity ≤ {key}:", "",
                  "| method | simulated time (s) | bytes up (MB) | bytes down (MB) | energy (J) | round | seeds |",
                  "|---|---|---|---|---|---|---|"]
        for method, by_target in result["methods"].items():
            e = by_target[key]["mean"]
            if not e["reached"]:
                lines.append(f"| {method} | not reached | – | – | – | – | 0/{e['seeds']} |")
                continue
            lines.append(f"| {method} | {_pm(e, 'sim_time_s', 1, 1)} | {_pm(e, 'bytes_up', 1e6, 2)} | "
                         f"{_pm(e, 'bytes_down', 1e6, 2)} | {_pm(e, 'energy_j', 1, 1)} | {_pm(e, 'round', 1, 1)} | "
                         f"{e['seeds_reached']}/{e['seeds']} |")
        lines.append("")
    return "\n".join(lines)


def record_targets(run: Any) -> None:
    """Time-to-target of a run whose directory has just closed (a `RunDirectory`; metrics.csv is
    complete on disk), written into its summary.json. A failure never hides how the run ended:
    its error goes into summary.json's `error`."""
    try:
        run.time_to_target = run_targets(run.path)
        run.write_summary()
    except Exception as exc:  # noqa: BLE001 - a derived table, never the run's outcome
        run.record_problem(f"time to target failed: {exc}")
