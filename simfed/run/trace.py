"""trace.json: the simulated events as a Chrome trace-event timeline (open it in Perfetto or
chrome://tracing).

One process (`pid`) per method and seed; in it one track (`tid`) per device (tid = device + 1)
and a server track (tid 0). Complete spans (`ph: "X"`, `ts`/`dur` in microseconds of simulated
time) for each download, compute and upload (a cut step becomes a span named "download (cut)",
etc.), one span per round on the server track, and instant events (`ph: "i"`) for dropped (with
its recovery_s / slot_held_s when set), straggler (reason "refused" under late_reports: refuse),
stale, diverged and aggregated; an abandoned round's span says reason "abandoned".

The file is a JSON array that is valid after every write: each flush seeks back over the closing
"]" and appends the new events before a fresh "]". A crash or Ctrl-C between flushes loses only
the events not yet flushed (the writer flushes at every round end and on close).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from simfed.run.observers import RUN_EVENT_KINDS

US = 1_000_000  # microseconds per second
SERVER_TID = 0
PHASES = ("download", "compute", "upload")
INSTANTS = ("dropped", "straggler", "stale", "diverged", "aggregated")


def _event_dict(event: Any) -> Mapping[str, Any]:
    return event.to_dict() if hasattr(event, "to_dict") else event


class TraceWriter:
    """Writes trace.json as the run goes. `observer(method, seed)` gives the engine observer of
    one method/seed (a SimEvent or its dict per call); `close()` finishes the file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = open(self.path, "wb")
        self._file.write(b"[\n]")
        self._file.flush()
        self._empty = True
        self._pending: list[dict[str, Any]] = []
        self._pids: dict[tuple[str, int], int] = {}
        self._observers: dict[tuple[str, int], Callable[[Any], None]] = {}

    def observer(self, method: str, seed: int) -> Callable[[Any], None]:
        """The observer of one method/seed (the same one on every call: a resumed run first feeds
        it the events already in events.jsonl, see `add_events`, then the engine's)."""
        key = (method, seed)
        if key in self._observers:
            return self._observers[key]
        pid = self._pids.setdefault(key, len(self._pids) + 1)
        track = _Tracks(pid, f"{method} seed {seed}", self._pending)

        def observe(event: Any) -> None:
            data = _event_dict(event)
            if data["kind"] in RUN_EVENT_KINDS:  # the run's own (evaluations, the end): not on the timeline
                return
            track.add(data)
            if data["kind"] == "round_end":
                self.flush()

        self._observers[key] = observe
        return observe

    def add_events(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Feed events.jsonl's events (dicts tagged with method and seed) to their observers."""
        for e in events:
            self.observer(e["method"], e["seed"])(e)

    def flush(self) -> None:
        if not self._pending or self._file.closed:
            return
        body = ",\n".join(json.dumps(item, separators=(",", ":")) for item in self._pending)
        self._pending.clear()
        self._file.seek(-1, os.SEEK_END)  # over the closing "]"
        self._file.write(((",\n" if not self._empty else "") + body + "\n]").encode("utf-8"))
        self._file.flush()
        self._empty = False

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Tracks:
    """Turns one method/seed's event stream into trace events (appended to `out`)."""

    def __init__(self, pid: int, name: str, out: list[dict[str, Any]]):
        self.pid, self.out = pid, out
        self.open: dict[tuple[int, str], float] = {}  # (device, phase) -> start, sim seconds
        self.rounds: dict[int, float] = {}  # round -> start, sim seconds
        self.named: set[int] = set()
        out.append({"ph": "M", "name": "process_name", "pid": pid, "tid": SERVER_TID, "args": {"name": name}})
        self._name_track(SERVER_TID, "server")

    def _name_track(self, tid: int, name: str) -> None:
        self.named.add(tid)
        self.out.append({"ph": "M", "name": "thread_name", "pid": self.pid, "tid": tid, "args": {"name": name}})
        self.out.append({"ph": "M", "name": "thread_sort_index", "pid": self.pid, "tid": tid, "args": {"sort_index": tid}})

    def _span(self, tid: int, name: str, start_s: float, end_s: float, args: dict[str, Any]) -> None:
        self.out.append({"name": name, "cat": name.split(" ")[0], "ph": "X", "pid": self.pid, "tid": tid,
                         "ts": start_s * US, "dur": (end_s - start_s) * US, "args": args})

    def _instant(self, tid: int, name: str, t: float, args: dict[str, Any]) -> None:
        self.out.append({"name": name, "cat": name, "ph": "i", "s": "t", "pid": self.pid, "tid": tid,
                         "ts": t * US, "args": args})

    def add(self, e: Mapping[str, Any]) -> None:
        kind, t, r, device = e["kind"], e["t"], e["round"], e.get("device")
        tid = SERVER_TID if device is None else device + 1
        if device is not None and tid not in self.named:
            self._name_track(tid, f"device {device}")
        phase, _, edge = kind.rpartition("_")
        if phase in PHASES and edge == "start":
            self.open[(device, phase)] = t
        elif phase in PHASES and edge == "end":
            start = self.open.pop((device, phase), t - (e.get("seconds") or 0.0))
            args = {k: e[k] for k in ("bytes", "flops", "energy_j") if e.get(k) is not None}
            self._span(tid, phase, start, t, {"round": r, **args})
        elif kind == "dropped":
            start = self.open.pop((device, e["phase"]), t - (e.get("seconds") or 0.0))
            self._span(tid, f"{e['phase']} (cut)", start, t, {"round": r, "reason": e.get("reason")})
            extra = {k: e[k] for k in ("recovery_s", "slot_held_s") if e.get(k) is not None}
            self._instant(tid, "dropped", t, {"round": r, "phase": e["phase"], "reason": e.get("reason"), **extra})
        elif kind in INSTANTS:
            keep = ("reason", "late_s", "staleness", "devices", "weights", "stalenesses", "count")
            self._instant(tid, kind, t, {"round": r, **{k: e[k] for k in keep if e.get(k) is not None}})
        elif kind == "round_start":
            self.rounds[r] = t
        elif kind == "round_end":
            start = self.rounds.pop(r, t - (e.get("duration_s") or 0.0))
            self._span(SERVER_TID, f"round {r}", start, t,
                       {"round": r, "reason": e.get("reason"), "aggregated": e.get("aggregated")})


def trace_from_events(events: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write trace.json from an events.jsonl stream (dicts tagged with method and seed), e.g. to
    redraw the timeline of a finished or interrupted run."""
    with TraceWriter(path) as writer:
        observers: dict[tuple[str, int], Callable[[Any], None]] = {}
        for e in events:
            key = (e["method"], e["seed"])
            if key not in observers:
                observers[key] = writer.observer(*key)
            observers[key](e)
    return Path(path)


def read_events(run_dir: str | Path) -> list[dict[str, Any]]:
    """The events of a run directory's events.jsonl (a torn last line, from a crash, is skipped)."""
    out = []
    with open(Path(run_dir) / "events.jsonl", encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out
