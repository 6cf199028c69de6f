"""PNG plots of a run, from metrics.csv alone (so an interrupted run gets them too).

Matplotlib's object API with the Agg canvas: no pyplot, no global backend switch, no display.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simfed.run.results import MEAN_DEVICE, RunDirectory
from simfed.report.readers import read_metrics

MB = 1e6  # bytes per megabyte (decimal, as link speeds are quoted)


def mean_curves(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, float]]]:
    """Per method, one point per round: the `mean` rows averaged over the seeds that reached it.

    A point has round, hours (simulated), mb (bytes up + down, megabytes) and ppl."""
    by_round: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for row in rows:
        if row["device"] == MEAN_DEVICE:
            by_round.setdefault(row["method"], {}).setdefault(row["round"], []).append(row)
    curves = {}
    for method, rounds in by_round.items():
        points = []
        for round_index in sorted(rounds):
            group = rounds[round_index]
            ppls = [r["ppl"] for r in group if math.isfinite(r["ppl"])]
            if not ppls:
                continue
            points.append({
                "round": round_index,
                "hours": sum(r["sim_time_s"] for r in group) / len(group) / 3600,
                "mb": sum(r["bytes_up"] + r["bytes_down"] for r in group) / len(group) / MB,
                "ppl": sum(ppls) / len(ppls),
                "seeds": len(group),
            })
        curves[method] = points
    return curves


def _plot(curves, x_key: str, x_label: str, title: str, path: Path) -> Path:
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ppls = []
    for method, points in curves.items():
        if not points:
            continue
        xs = [p[x_key] for p in points]
        ys = [p["ppl"] for p in points]
        ppls += ys
        ax.plot(xs, ys, marker="o" if len(points) < 30 else None, markersize=3, label=method)
    if ppls and min(ppls) > 0 and max(ppls) / min(ppls) > 10:
        ax.set_yscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel("mean perplexity over devices (test)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ppls:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no evaluations yet", ha="center", va="center", transform=ax.transAxes)
    fig.savefig(path, dpi=120)
    return path


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write ppl_vs_time.png, ppl_vs_bytes.png and the first rounds' device timeline (timeline.png,
    from events.jsonl) into the run directory; return their paths."""
    from simfed.report.timeline import plot_timeline
    from simfed.run.trace import read_events

    run_dir = Path(run_dir)
    curves = mean_curves(read_metrics(run_dir))
    name = run_dir.parent.name
    paths = [
        _plot(curves, "hours", "simulated time (hours)", f"{name}: perplexity vs simulated time",
              run_dir / "ppl_vs_time.png"),
        _plot(curves, "mb", "bytes moved, up + down (MB)", f"{name}: perplexity vs communication",
              run_dir / "ppl_vs_bytes.png"),
    ]
    events = read_events(run_dir) if (run_dir / "events.jsonl").exists() else []
    if events:
        paths.append(plot_timeline(events, run_dir / "timeline.png", rounds=3))
    return paths


def plot_closed_run(run: RunDirectory) -> list[Path]:
    """The plots of a run whose directory has just closed, however it ended (metrics.csv and
    events.jsonl are complete on disk). A failing plot never hides how the run ended: its error
    goes into summary.json's `error` and no path is returned."""
    try:
        return plot_run(run.path)
    except Exception as exc:  # noqa: BLE001 - any failure of matplotlib or of the files
        run.record_problem(f"plots failed: {exc}")
        return []
