"""A run directory, written as the run goes: the single source every report reads.

    runs/<scenario>/<YYYYmmdd-HHMMSS>/
        scenario.resolved.yaml   the scenario with every default filled in
        metrics.csv              one row per evaluation per device, plus a `mean` row
        events.jsonl             every simulated event, tagged with method and seed
        summary.json             per-method totals and the run's status
        ppl_vs_time.png, ppl_vs_bytes.png

Every row is flushed when written and summary.json is rewritten after every method, so a
Ctrl-C or a crash keeps everything measured so far.
"""
from __future__ import annotations

import csv
import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

METRICS_HEADER = ("method", "seed", "round", "sim_time_s", "bytes_up", "bytes_down",
                  "energy_j", "device", "ppl", "acc", "ppl_se")
# ppl_se: the standard error of ppl over the device's evaluation windows (simfed/learn/evaluate.py);
# on the mean row that of the mean over devices, √(Σ se_d²) / D (devices evaluated independently)
MEAN_DEVICE = "mean"  # the `device` of the row holding the mean over devices
# what summary.json holds for every method (and seed); None where not measured
SUMMARY_KEYS = ("final_mean_ppl", "final_mean_acc", "final_mean_ppl_se", "sim_time_s", "bytes_up", "bytes_down",
                "energy_j", "rounds", "updates_aggregated", "dropouts", "stragglers",
                "wasted_compute_s", "wasted_bytes")
STATUSES = ("running", "complete", "interrupted", "failed")
# other files some runs append to as they go (training.save_routing): cut back too on resume
APPEND_FILES = ("routing.jsonl",)


def _number(value: Any) -> Any:
    """Floats as written to CSV/JSON: NaN/inf become None in JSON, integers stay integers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _se_of_mean(ses: Sequence[float]) -> float:
    """Standard error of a mean of D independent estimates with these SEs: √(Σ se²) / D; NaN
    unless every one is known."""
    if not ses or any(se is None or not math.isfinite(se) for se in ses):
        return math.nan
    return math.sqrt(sum(se * se for se in ses)) / len(ses)


def _blank_nan(value: float) -> Any:
    """An unknown standard error is an empty CSV cell (read back as NaN)."""
    return "" if value is None or not math.isfinite(value) else value


class RunDirectory:
    """Writers for one run; use as a context manager so the final status is always written.

    On leaving the `with` block the status becomes "complete", "interrupted" (KeyboardInterrupt)
    or "failed" (any other exception, whose text goes into summary.json). The exception is not swallowed; it gets a `run_dir` attribute
    so the CLI can point at the partial results.
    """

    def __init__(self, path: Path, scenario_name: str, seeds: Sequence[int] = (0,)):
        self.path = Path(path)
        self.scenario_name = scenario_name
        self.seeds = list(seeds)
        self.started_at = datetime.now().isoformat(timespec="seconds")
        self.status = "running"
        self.error: str | None = None
        self._results: dict[str, dict[int, dict[str, Any]]] = {}  # method → seed → finished stats
        self._last_mean: dict[tuple[str, int], dict[str, Any]] = {}  # (method, seed) → last mean row
        self._metrics_file = open(self.path / "metrics.csv", "a", newline="", encoding="utf-8")
        self._metrics = csv.writer(self._metrics_file)
        if self._metrics_file.tell() == 0:
            self._metrics.writerow(METRICS_HEADER)
            self._metrics_file.flush()
        self._events = open(self.path / "events.jsonl", "a", encoding="utf-8")
        self._closed = False
        self.time_to_target: dict[str, Any] | None = None  # simfed/report/targets.py, after close
        self.environment: dict[str, Any] | None = None  # simfed/run/environment.py, set by the runner

    @classmethod
    def create(cls, out_root: str | Path, scenario_name: str, resolved_yaml: str,
               seeds: Sequence[int] = (0,), now: datetime | None = None) -> "RunDirectory":
        """Make `out_root/<scenario>/<YYYYmmdd-HHMMSS>[-N]/` (never reusing one) and open it."""
        parent = Path(out_root) / scenario_name
        parent.mkdir(parents=True, exist_ok=True)
        stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
        for attempt in range(1, 1000):
            path = parent / (stamp if attempt == 1 else f"{stamp}-{attempt}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        else:  # pragma: no cover - a thousand runs in one second
            raise RuntimeError(f"cannot make a fresh run directory under {parent}")
        (path / "scenario.resolved.yaml").write_text(resolved_yaml, encoding="utf-8")
        run = cls(path, scenario_name, seeds)
        run.write_summary()
        return run

    # ------------------------------------------------------------ resuming (simfed/run/checkpoint.py)

    def export_state(self) -> dict[str, Any]:
        """What a resumed run needs of this object, JSON-able: the finished methods' entries, the
        last mean rows, and the byte sizes of metrics.csv and events.jsonl now (both flushed)."""
        self._metrics_file.flush()
        self._events.flush()
        return {
            "scenario": self.scenario_name, "started_at": self.started_at,
            "results": [[m, seed, entry] for m, seeds in self._results.items() for seed, entry in seeds.items()],
            "last_mean": [[m, seed, row] for (m, seed), row in self._last_mean.items()],
            "metrics_bytes": os.fstat(self._metrics_file.fileno()).st_size,
            "events_bytes": os.fstat(self._events.fileno()).st_size,
            "append_bytes": {name: (self.path / name).stat().st_size if (self.path / name).exists() else 0
                             for name in APPEND_FILES},
        }

    @classmethod
    def reopen(cls, path: str | Path, seeds: Sequence[int], state: Mapping[str, Any]) -> "RunDirectory":
        """Reopen a run directory where `export_state()` left it: metrics.csv and events.jsonl are
        cut back to their sizes then (rows written after it are written again by the resumed run)."""
        path = Path(path)
        for name, key in (("metrics.csv", "metrics_bytes"), ("events.jsonl", "events_bytes")):
            with open(path / name, "r+b") as f:
                f.truncate(int(state[key]))
        for name, size in state.get("append_bytes", {}).items():
            if (path / name).exists():
                with open(path / name, "r+b") as f:
                    f.truncate(int(size))
        run = cls(path, state["scenario"], seeds)
        run.started_at = state["started_at"]
        for method, seed, entry in state["results"]:
            run._results.setdefault(method, {})[int(seed)] = entry
        for method, seed, row in state["last_mean"]:
            run._last_mean[(method, int(seed))] = row
        run.write_summary()
        return run

    # ------------------------------------------------------------ as the run goes

    def log_event(self, method: str, seed: int, event: Any) -> None:
        """Append one simulated event (a SimEvent or its dict) to events.jsonl."""
        body = event.to_dict() if hasattr(event, "to_dict") else dict(event)
        record = {"method": method, "seed": seed, **body}
        self._events.write(json.dumps(_clean(record), default=str) + "\n")
        self._events.flush()

    def log_evaluation(self, method: str, seed: int, round_index: int, sim_time_s: float,
                       bytes_up: int, bytes_down: int, energy_j: float,
                       per_device: Mapping[Any, tuple[float, ...]]) -> dict[str, Any]:
        """Write one row per device and a `mean` row; bytes and energy are cumulative for the
        method/seed so far. `per_device` maps a device id to (perplexity, accuracy[, perplexity's
        standard error]). Returns the mean row as a dict."""
        common = (method, seed, round_index, sim_time_s, bytes_up, bytes_down, energy_j)
        values = {device: (v[0], v[1], v[2] if len(v) > 2 else math.nan) for device, v in per_device.items()}
        for device, (ppl, acc, se) in values.items():
            self._metrics.writerow(common + (device, ppl, acc, _blank_nan(se)))
        mean_ppl = _mean([p for p, _, _ in values.values()])
        mean_acc = _mean([a for _, a, _ in values.values()])
        mean_se = _se_of_mean([se for _, _, se in values.values()])
        self._metrics.writerow(common + (MEAN_DEVICE, mean_ppl, mean_acc, _blank_nan(mean_se)))
        self._metrics_file.flush()
        row = dict(zip(METRICS_HEADER, common + (MEAN_DEVICE, mean_ppl, mean_acc, mean_se)))
        self._last_mean[(method, seed)] = row
        return row

    def finish_method(self, method: str, seed: int, stats: Mapping[str, Any],
                      measured_model: str | None = None) -> None:
        """Record a finished method/seed (e.g. `Tally.as_summary()`) and rewrite summary.json.

        `final_mean_ppl`/`final_mean_acc` default to the last `mean` row logged for it."""
        entry: dict[str, Any] = {key: None for key in SUMMARY_KEYS}
        last = self._last_mean.get((method, seed))
        if last is not None:
            entry.update(final_mean_ppl=last["ppl"], final_mean_acc=last["acc"],
                         final_mean_ppl_se=last.get("ppl_se"))
        entry.update({k: v for k, v in stats.items()})
        if measured_model is not None:
            entry["measured_model"] = measured_model
        entry["finished"] = True
        self._results.setdefault(method, {})[seed] = entry
        self.write_summary()

    # ------------------------------------------------------------ summary.json

    def _partial(self, method: str, seed: int) -> dict[str, Any]:
        """What metrics.csv knows about a method/seed that did not finish."""
        last = self._last_mean[(method, seed)]
        entry: dict[str, Any] = {key: None for key in SUMMARY_KEYS}
        entry.update(final_mean_ppl=last["ppl"], final_mean_acc=last["acc"],
                     final_mean_ppl_se=last.get("ppl_se"), sim_time_s=last["sim_time_s"], bytes_up=last["bytes_up"],
                     bytes_down=last["bytes_down"], energy_j=last["energy_j"],
                     rounds=last["round"], finished=False)
        return entry

    def summary(self) -> dict[str, Any]:
        per_method: dict[str, dict[int, dict[str, Any]]] = {}
        for (method, seed) in self._last_mean:
            per_method.setdefault(method, {})
        for method, seeds in self._results.items():
            per_method.setdefault(method, {}).update(seeds)
        for (method, seed) in self._last_mean:
            per_method[method].setdefault(seed, self._partial(method, seed))
        methods = {}
        for method, seeds in per_method.items():
            ordered = dict(sorted(seeds.items()))
            if len(self.seeds) <= 1 and len(ordered) == 1:
                methods[method] = next(iter(ordered.values()))
            else:
                methods[method] = _mean_over_seeds(ordered)
        return {
            "scenario": self.scenario_name,
            "status": self.status,
            "error": self.error,
            "started_at": self.started_at,
            "updated_at": datetime.now().isoformat(timespec="seconds"),
            "seeds": self.seeds,
            "methods": methods,
            **({"time_to_target": self.time_to_target} if self.time_to_target is not None else {}),
            **({"environment": self.environment} if self.environment is not None else {}),
        }

    def write_summary(self) -> None:
        """Rewrite summary.json atomically (a reader never sees half a file)."""
        text = json.dumps(_clean(self.summary()), indent=2)
        tmp = self.path / "summary.json.tmp"
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, self.path / "summary.json")

    # ------------------------------------------------------------ the end

    def close(self, status: str = "complete", error: str | None = None) -> None:
        """Write the final summary; close the files. Idempotent. (The runner draws the plots
        after this, `simfed.report.targets.record_targets` and `simfed.report.plots.plot_closed_run`:
        the readers, derived tables and plots are not the writer's job.)"""
        if self._closed:
            return
        assert status in STATUSES, status
        self._closed = True
        self.status, self.error = status, error
        self._metrics_file.close()
        self._events.close()
        self.write_summary()

    def record_problem(self, text: str) -> None:
        """After closing: add a problem to the error of summary.json (e.g. plots that failed)."""
        self.error = (self.error + "; " if self.error else "") + text
        self.write_summary()

    def __enter__(self) -> "RunDirectory":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close("complete")
        elif isinstance(exc, KeyboardInterrupt):
            self.close("interrupted", "interrupted by the user (Ctrl-C)")
        else:
            self.close("failed", f"{type(exc).__name__}: {exc}")
        if exc is not None:
            try:
                exc.run_dir = self.path
            except AttributeError:  # pragma: no cover - exceptions with __slots__
                pass


def _mean_over_seeds(seeds: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The method's entry with several seeds: numeric means, and each seed's own entry."""
    entries = list(seeds.values())
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for e in entries for k in e):
        values = [e.get(key) for e in entries]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = _mean(values)
        elif all(v == values[0] for v in values):
            out[key] = values[0]
    out["finished"] = all(e.get("finished") for e in entries)
    out["seeds"] = {str(seed): entry for seed, entry in seeds.items()}
    return out


def _clean(value: Any) -> Any:
    """JSON without NaN: non-finite floats become null."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return _number(value)

# The readers of a run directory are in simfed/report/readers.py (the writer never imports them).
