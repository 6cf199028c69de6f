"""Participation per simulated hour against the hour-of-day availability profile.

    .venv/bin/python analysis/participation.py RUN_DIR [--out DIR]

Reads RUN_DIR/events.jsonl and RUN_DIR/scenario.resolved.yaml and writes participation.png and
participation.csv (into RUN_DIR, or --out), and prints the table. Per simulated hour k (sim time
[k h, (k+1) h)), per method, averaged over seeds:

- selected: devices picked in that hour (`selected` events);
- aggregated: updates merged in that hour (the `devices` of `aggregated` events);
- eligible: mean number of online-and-idle devices at the round starts of that hour (`round_start`);
- profile: the devices the availability profile expects online in that hour,
  Σ_groups count × hourly[clock hour] (diurnal groups: their `hourly`, or the built-in FLASH
  profile; the clock hour is start_hour + k, taken at the hour's middle); always-on groups count
  fully, markov groups by their stationary on-fraction, trace groups on the common clock (the
  default) by the trace's own online share in that hour of the trace's clock (the share of
  clients inside their recorded window that are ready, `Trace.online_share_by_hour`; the clock
  hour of sim time 0 is the trace's start_hour, or that of its earliest start), trace groups on
  their own clock by the mean ready fraction of the clients in that hour as replayed (each from
  sim time 0, repeating).

The figure: selected and aggregated per hour (left axis) with the profile (right axis, devices
online), and the eligible devices at round starts against the profile (same axis). The printout
ends with the Pearson correlation of each series with the profile.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from simfed.sim.availability import builtin_diurnal  # noqa: E402

HOUR_S = 3600.0


def expected_online(world: dict, hours: int) -> tuple[np.ndarray, float | None]:
    """Devices expected online in each simulated hour, and the clock hour of sim time 0 (None if
    the diurnal groups disagree or there are none)."""
    profile = np.zeros(hours)
    starts = set()
    for group in world["fleet"]:
        count, avail = group["count"], group.get("availability") or {"kind": "always_on"}
        kind = avail.get("kind", "always_on")
        if kind == "diurnal":
            hourly = avail.get("hourly") or builtin_diurnal()["hourly"]
            start = float(avail.get("start_hour", 0.0))
            starts.add(start)
            profile += [count * hourly[int(math.floor(start + k + 0.5)) % 24] for k in range(hours)]
        elif kind == "always_on":
            profile += count
        elif kind == "markov":
            profile += count * avail["mean_on_s"] / (avail["mean_on_s"] + avail["mean_off_s"])
        elif kind == "trace" and avail.get("clock", "common") == "common":
            share, start = trace_clock_share(avail)
            starts.add(start)
            profile += [count * share[int(math.floor(start + k + 0.5)) % 24] for k in range(hours)]
        elif kind == "trace":
            profile += count * trace_ready_fraction(avail["path"], float(avail.get("offset_s", 0.0)), hours)
    return profile, (starts.pop() if len(starts) == 1 else None)


def trace_clock_share(avail: dict) -> tuple[np.ndarray, float]:
    """A common-clock trace group: the trace's online share per hour of its clock, and the clock
    hour (fractional) at sim time 0."""
    from simfed.sim.availability import common_origin, read_trace
    from simfed.sim.spec import TraceSpec

    spec = TraceSpec.model_validate(avail)
    trace = read_trace(spec.path)
    return trace.online_share_by_hour(), (common_origin(trace, spec) % 86400.0) / HOUR_S


def trace_ready_fraction(path: str, offset_s: float, hours: int, samples: int = 12) -> np.ndarray:
    """Mean fraction of a trace's clients ready during each simulated hour, as the engine replays
    them (shifted to start at sim time 0 plus `offset_s`, repeating with the trace's length); a
    device draws its client uniformly, so this is what each trace-driven device is expected to do."""
    from simfed.sim.availability import _read_trace

    clients = _read_trace(path)
    fraction = np.zeros(hours)
    for k in range(hours):
        times = (k + (np.arange(samples) + 0.5) / samples) * HOUR_S + offset_s
        ready = 0.0
        for length, spans in clients:
            phase = np.mod(times, length)
            ready += np.mean([any(a <= t < b for a, b in spans) for t in phase])
        fraction[k] = ready / len(clients)
    return fraction


def hourly_counts(events_path: Path, hours: int) -> dict[str, dict[str, np.ndarray]]:
    """method → series name → per-hour values, averaged over seeds."""
    sums: dict[tuple[str, int], dict[str, np.ndarray]] = defaultdict(
        lambda: {"selected": np.zeros(hours), "aggregated": np.zeros(hours), "eligible_sum": np.zeros(hours),
                 "round_starts": np.zeros(hours)})
    with events_path.open() as f:
        for line in f:
            e = json.loads(line)
            k = int(e["t"] // HOUR_S)
            if k >= hours:
                continue
            s = sums[(e["method"], e["seed"])]
            if e["kind"] == "selected":
                s["selected"][k] += 1
            elif e["kind"] == "aggregated":
                s["aggregated"][k] += len(e["devices"])
            elif e["kind"] == "round_start":
                s["eligible_sum"][k] += e["eligible"]
                s["round_starts"][k] += 1
    out: dict[str, dict[str, np.ndarray]] = {}
    for method in sorted({m for m, _ in sums}):
        runs = [v for (m, _), v in sums.items() if m == method]
        with np.errstate(invalid="ignore", divide="ignore"):
            eligible = [r["eligible_sum"] / r["round_starts"] for r in runs]
        out[method] = {
            "selected": np.mean([r["selected"] for r in runs], axis=0),
            "aggregated": np.mean([r["aggregated"] for r in runs], axis=0),
            "eligible": np.nanmean(eligible, axis=0) if len(runs) > 1 else eligible[0],
        }
    return out


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    ok = ~(np.isnan(a) | np.isnan(b))
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def plot(series: dict[str, dict[str, np.ndarray]], profile: np.ndarray, start: float | None, path: Path) -> None:
    hours = len(profile)
    x = np.arange(hours) + 0.5
    fig = Figure(figsize=(10, 7), constrained_layout=True)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    for i, (method, s) in enumerate(series.items()):
        c = colours[i % len(colours)]
        top.plot(x, s["selected"], "-o", color=c, ms=3, label=f"{method}: selected")
        top.plot(x, s["aggregated"], "--", color=c, label=f"{method}: aggregated")
        bottom.plot(x, s["eligible"], "-o", color=c, ms=3, label=f"{method}: eligible at round start")
    top.set_ylabel("devices per simulated hour")
    right = top.twinx()
    right.fill_between(x, profile, step="mid", color="grey", alpha=0.2, label="profile: devices online")
    right.set_ylabel("devices online (profile)")
    right.set_ylim(0, profile.max() * 1.15 if profile.max() > 0 else 1)
    top.set_ylim(0, None)
    lines, labels = top.get_legend_handles_labels()
    more, more_labels = right.get_legend_handles_labels()
    top.legend(lines + more, labels + more_labels, fontsize=8, loc="upper right")
    top.set_title("Participation per simulated hour vs the hour-of-day availability profile")
    bottom.step(x, profile, where="mid", color="black", label="profile: Σ count × hourly[h]")
    bottom.set_ylabel("devices online and idle")
    bottom.set_ylim(0, None)
    bottom.legend(fontsize=8, loc="upper right")
    ticks = np.arange(0, hours + 1, 2)
    bottom.set_xticks(ticks)
    if start is not None:
        bottom.set_xticklabels([f"{int((start + t) % 24):02d}:00" for t in ticks], fontsize=8)
        bottom.set_xlabel("clock time (sim time 0 = start_hour)")
    else:
        bottom.set_xlabel("simulated hour")
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: RUN_DIR)")
    args = parser.parse_args(argv)
    run, out = args.run_dir, args.out or args.run_dir
    out.mkdir(parents=True, exist_ok=True)
    scenario = yaml.safe_load((run / "scenario.resolved.yaml").read_text())
    world = scenario["world"]
    last_t = 0.0
    with (run / "events.jsonl").open() as f:
        for line in f:
            last_t = max(last_t, json.loads(line)["t"])
    limit = world["server"].get("max_sim_time_s")
    hours = max(1, int(math.ceil((min(last_t, limit) if limit else last_t) / HOUR_S)))
    profile, start = expected_online(world, hours)
    series = hourly_counts(run / "events.jsonl", hours)

    rows = []
    for k in range(hours):
        row = {"hour": k, "clock": f"{int((start + k) % 24):02d}" if start is not None else "",
               "profile_online": round(float(profile[k]), 2)}
        for method, s in series.items():
            for name in ("selected", "aggregated", "eligible"):
                row[f"{method}:{name}"] = round(float(s[name][k]), 2)
        rows.append(row)
    with (out / "participation.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(series, profile, start, out / "participation.png")

    print(" ".join(f"{k:>14}" if i > 2 else f"{k:>7}" for i, k in enumerate(rows[0])))
    for row in rows:
        print(" ".join(f"{v:>14}" if i > 2 else f"{v:>7}" for i, v in enumerate(row.values())))
    for method, s in series.items():
        corr = ", ".join(f"{n} r={correlation(s[n], profile):.2f}" for n in ("selected", "aggregated", "eligible"))
        print(f"{method}: correlation with the profile: {corr}")
    print(f"wrote {out / 'participation.png'} and {out / 'participation.csv'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
