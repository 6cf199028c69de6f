"""A PNG device timeline of a run's first rounds, from events.jsonl alone: one row per device,
a coloured bar per download / compute / upload (hatched where a dropout cut it), a cross where a
device dropped, a triangle for a straggler or a stale update, dotted lines at round ends.

Matplotlib's object API with the Agg canvas, as in plots.py: no pyplot, no display.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

COLOURS = {"download": "#4c78a8", "compute": "#f58518", "upload": "#54a24b"}


@dataclass(frozen=True)
class Bar:
    device: int
    phase: str  # download | compute | upload
    start_s: float  # sim seconds
    seconds: float
    cut: bool  # a dropout ended it


def timeline_bars(events: Iterable[Mapping[str, Any]], rounds: int) -> tuple[list[Bar], list[Mapping[str, Any]]]:
    """Bars of the device steps that belong to rounds 0..rounds-1, and the marker events
    (dropped, straggler, stale, round_end) of those rounds."""
    bars, marks, open_steps = [], [], {}
    for e in events:
        if e["round"] >= rounds:
            continue
        kind, device = e["kind"], e.get("device")
        phase, _, edge = kind.rpartition("_")
        if phase in COLOURS and edge == "start":
            open_steps[(device, phase)] = e["t"]
        elif phase in COLOURS and edge == "end":
            start = open_steps.pop((device, phase), e["t"] - e.get("seconds", 0.0))
            bars.append(Bar(device, phase, start, e["t"] - start, False))
        elif kind == "dropped":
            start = open_steps.pop((device, e["phase"]), e["t"] - e.get("seconds", 0.0))
            bars.append(Bar(device, e["phase"], start, e["t"] - start, True))
            marks.append(e)
        elif kind in ("straggler", "stale", "round_end"):
            marks.append(e)
    return bars, marks


def plot_timeline(events: Iterable[Mapping[str, Any]], path: str | Path, rounds: int = 3,
                  method: str | None = None, seed: int | None = None, title: str = "") -> Path:
    """Draw the timeline of the first `rounds` rounds of one method/seed (the first in the
    stream unless given) into `path` (PNG)."""
    events = list(events)
    if events and "method" in events[0]:
        method = method if method is not None else events[0]["method"]
        seed = seed if seed is not None else events[0]["seed"]
        events = [e for e in events if e["method"] == method and e["seed"] == seed]
    bars, marks = timeline_bars(events, rounds)
    devices = sorted({b.device for b in bars})
    row = {d: i for i, d in enumerate(devices)}

    fig = Figure(figsize=(9, 1.5 + 0.28 * max(1, len(devices))), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for bar in bars:
        ax.broken_barh([(bar.start_s, bar.seconds)], (row[bar.device] - 0.4, 0.8), facecolors=COLOURS[bar.phase],
                       hatch="///" if bar.cut else None, edgecolor="black" if bar.cut else "none", linewidth=0.5)
    for e in marks:
        if e["kind"] == "round_end":
            ax.axvline(e["t"], color="grey", linestyle=":", linewidth=1)
        elif e.get("device") in row:
            style = {"dropped": ("x", "red"), "straggler": ("v", "purple"), "stale": ("v", "brown")}[e["kind"]]
            ax.plot([e["t"]], [row[e["device"]]], marker=style[0], color=style[1], linestyle="none", markersize=7)
    ax.set_yticks(range(len(devices)), [f"device {d}" for d in devices])
    ax.set_ylim(-0.7, max(1, len(devices)) - 0.3)
    ax.invert_yaxis()
    ax.set_xlabel("simulated time (s)")
    label = f"{method} seed {seed}: " if method is not None else ""
    ax.set_title(title or f"{label}device timeline, first {rounds} rounds")
    handles = [Patch(color=c, label=p) for p, c in COLOURS.items()]
    ax.legend(handles=handles, loc="upper right", fontsize=8)
    if not bars:
        ax.text(0.5, 0.5, "no device activity in these rounds", ha="center", va="center", transform=ax.transAxes)
    ax.grid(True, axis="x", alpha=0.3)
    fig.savefig(path, dpi=110)
    return Path(path)
