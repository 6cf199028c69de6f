"""The live view of a run: one row per method, redrawn a few times a second (rich `Live`).

It observes the engine's event dicts (see `simfed/sim/events.py` for their fields) and the
runner's evaluations; it never imports the engine. Off a terminal, or with `--quiet`, it prints
one plain line per round instead (no escape codes). Each method also shows the host's wall clock
since it started (this seed) and an ETA — the mean wall time of its rounds so far times the rounds
left. The view is the only place that reads the host clock; nothing simulated depends on it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from rich.console import Console
from rich.live import Live
from rich.table import Table

from simfed.run.observers import MethodCallbacks

REFRESH_PER_SECOND = 4  # screen redraws per second, however many events arrive


def output_console() -> Console:
    """stdout's console; off a terminal, wide enough that tables keep one line per row."""
    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 160))


def human_bytes(n: float | None) -> str:
    """1234567 → '1.2 MB' (decimal units, as link rates are quoted)."""
    if n is None or (isinstance(n, float) and not math.isfinite(n)):
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def clock(seconds: float | None) -> str:
    """Simulated seconds → 'h:mm:ss'."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _num(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, fmt)


@dataclass
class MethodState:
    """What the view knows about one method's run so far (reset when a new seed starts)."""

    status: str = "waiting"  # waiting | running | done
    seed: int | None = None
    round: int = 0  # rounds started (1-based index of the current round)
    rounds_done: int = 0
    t: float = 0.0  # simulated clock, seconds
    bytes_up: int = 0
    bytes_down: int = 0
    in_flight: set[int] = field(default_factory=set)  # selected devices not yet finished or dropped
    dropped: int = 0
    stragglers: int = 0
    aggregated: int = 0  # updates merged by the server, all rounds
    diverged: int = 0  # updates the server refused as non-finite
    abandoned: int = 0  # rounds abandoned with fewer than min_reports reports
    ppl: float | None = None  # last mean perplexity over devices
    acc: float | None = None
    pending_line: bool = False  # plain mode: a finished round waiting for its evaluation
    started_wall: float | None = None  # host clock (s) when this method/seed began
    elapsed_wall: float | None = None  # host seconds from its start to its last event or evaluation

    def eta(self, rounds: int) -> float | None:
        """Host seconds left: mean wall time per finished round × rounds left (None before one)."""
        if self.elapsed_wall is None or self.rounds_done <= 0:
            return None
        return self.elapsed_wall / self.rounds_done * max(rounds - self.rounds_done, 0)

    def apply(self, e: Mapping[str, Any]) -> None:
        kind = e.get("kind")
        self.t = max(self.t, float(e.get("t") or 0.0))
        device = e.get("device")
        if kind == "round_start":
            self.round = int(e.get("round", 0)) + 1
        elif kind == "selected" and device is not None:
            self.in_flight.add(device)
        elif kind == "download_end":
            self.bytes_down += e.get("bytes") or 0
        elif kind == "upload_end":
            self.bytes_up += e.get("bytes") or 0
            self.in_flight.discard(device)
        elif kind == "dropped":
            self.dropped += 1
            self.in_flight.discard(device)
            if e.get("phase") == "download":
                self.bytes_down += e.get("bytes") or 0
            elif e.get("phase") == "upload":
                self.bytes_up += e.get("bytes") or 0
        elif kind == "straggler":
            self.stragglers += 1
        elif kind == "diverged":
            self.diverged += 1
        elif kind == "round_end" and e.get("reason") == "abandoned":
            self.abandoned += 1
            self.rounds_done = int(e.get("round", 0)) + 1
        elif kind == "aggregated":
            self.aggregated += e.get("count") or len(e.get("devices") or ())
        elif kind == "round_end":
            self.rounds_done = int(e.get("round", 0)) + 1


def _troubles(state: MethodState) -> str:
    """The plain line's tail: refused (non-finite) updates and abandoned rounds, when any."""
    parts = [f"diverged {state.diverged}"] if state.diverged else []
    parts += [f"abandoned {state.abandoned}"] if state.abandoned else []
    return "".join("  " + p for p in parts)


class ProgressView(MethodCallbacks):
    """An observer of a run: `with ProgressView(names, rounds, enabled) as view: run_scenario(..., [view])`.

    A run observer like any other (simfed/run/observers.py), written as `MethodCallbacks`' four
    calls: `on_method_start`, `on_event` for every engine event, `on_metrics` after every
    evaluation and `on_method_done` at the end of each method × seed. Whoever opens it closes it
    (the `with`). `enabled=False` (or stdout not a terminal) gives plain one-line-per-round output.
    """

    def __init__(self, methods: list[str], rounds: int, enabled: bool = True,
                 console: Console | None = None, wall: Callable[[], float] = time.monotonic):
        self.console = console or output_console()
        self.wall = wall  # the host clock (a test passes a fake one)
        self.rounds = rounds
        self.states: dict[str, MethodState] = {name: MethodState() for name in methods}
        self.live_mode = enabled and self.console.is_terminal
        self._live: Live | None = None

    # ------------------------------------------------------------ context

    def __enter__(self) -> "ProgressView":
        if self.live_mode:
            self._live = Live(console=self.console, get_renderable=self.table,
                              refresh_per_second=REFRESH_PER_SECOND, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
            self._live = None
        else:
            for name in self.states:
                self._flush_pending(name)

    # ------------------------------------------------------------ observer API

    def _state(self, method: str) -> MethodState:
        return self.states.setdefault(method, MethodState())

    def _tick(self, state: MethodState) -> None:
        now = self.wall()
        if state.started_wall is None:
            state.started_wall = now
        state.elapsed_wall = now - state.started_wall

    def on_method_start(self, method: str, seed: int | None = None) -> None:
        """A method (with this seed) begins: its counters start from zero."""
        self._flush_pending(method)
        self.states[method] = MethodState(status="running", seed=seed, started_wall=self.wall())

    def on_event(self, method: str, event_dict: Mapping[str, Any]) -> None:
        state = self._state(method)
        if event_dict.get("kind") == "round_start":
            self._flush_pending(method)
            if int(event_dict.get("round", 0)) == 0 and (state.rounds_done or state.status == "done"):
                self.states[method] = state = MethodState(seed=state.seed)  # a new seed began
        state.status = "running"
        state.apply(event_dict)
        self._tick(state)
        if event_dict.get("kind") == "round_end" and not self.live_mode:
            state.pending_line = True

    def on_metrics(self, method: str, round: int, mean_ppl: float, mean_acc: float) -> None:
        state = self._state(method)
        state.ppl, state.acc = mean_ppl, mean_acc
        self._tick(state)
        if self.live_mode:
            return
        if state.pending_line:
            self._flush_pending(method)
        else:
            self._print(f"{method}  eval at round {round}: ppl {_num(mean_ppl, '.2f')}  "
                        f"acc {_num(mean_acc, '.3f')}")

    def on_method_done(self, method: str) -> None:
        self._flush_pending(method)
        state = self._state(method)
        state.status = "done"
        state.in_flight.clear()
        self._tick(state)
        if not self.live_mode:
            seed = "" if state.seed is None else f" (seed {state.seed})"
            self._print(f"{method}{seed}  done: {state.rounds_done} rounds, sim {clock(state.t)}, "
                        f"final ppl {_num(state.ppl, '.2f')}, wall {clock(state.elapsed_wall)}")

    # ------------------------------------------------------------ plain lines

    def _print(self, line: str) -> None:
        print(line, file=self.console.file, flush=True)

    def _flush_pending(self, method: str) -> None:
        state = self.states.get(method)
        if state is None or not state.pending_line:
            return
        state.pending_line = False
        self._print(
            f"{method}  round {state.rounds_done}/{self.rounds}  sim {clock(state.t)}  "
            f"up {human_bytes(state.bytes_up)}  down {human_bytes(state.bytes_down)}  "
            f"aggregated {state.aggregated}  dropped {state.dropped}  "
            f"stragglers {state.stragglers}  ppl {_num(state.ppl, '.2f')}{_troubles(state)}  "
            f"wall {clock(state.elapsed_wall)}  eta {clock(state.eta(self.rounds))}")

    # ------------------------------------------------------------ the live table

    def table(self) -> Table:
        table = Table(title="simfed", title_justify="left", expand=False)
        for header, justify in (("method", "left"), ("status", "left"), ("round", "right"),
                                ("sim clock", "right"), ("up", "right"), ("down", "right"),
                                ("in flight", "right"), ("dropped", "right"),
                                ("stragglers", "right"), ("aggregated", "right"),
                                ("mean ppl", "right"), ("acc", "right"), ("wall", "right"),
                                ("ETA", "right")):
            table.add_column(header, justify=justify)
        troubles = any(s.diverged or s.abandoned for s in self.states.values())  # columns once there is something
        if troubles:
            table.add_column("diverged", justify="right")
            table.add_column("abandoned", justify="right")
        style = {"waiting": "dim", "running": "bold yellow", "done": "green"}
        for name, s in list(self.states.items()):
            label = name if s.seed is None else f"{name} (seed {s.seed})"
            table.add_row(label, f"[{style.get(s.status, '')}]{s.status}[/]",
                          f"{s.round}/{self.rounds}", clock(s.t), human_bytes(s.bytes_up),
                          human_bytes(s.bytes_down), str(len(s.in_flight)), str(s.dropped),
                          str(s.stragglers), str(s.aggregated), _num(s.ppl, ".2f"),
                          _num(s.acc, ".3f"), clock(s.elapsed_wall),
                          "-" if s.status == "done" else clock(s.eta(self.rounds)),
                          *([str(s.diverged), str(s.abandoned)] if troubles else []))
        return table

    # ------------------------------------------------------------ the end

    def print_comparison(self, summary: Mapping[str, Any]) -> None:
        """The final table: `summarize_metrics(run_dir)` or summary.json (its "methods")."""
        methods = summary.get("methods", summary)
        table = Table(title="comparison", title_justify="left")
        for header in ("method", "final ppl", "acc", "rounds", "sim time", "up", "down",
                       "dropouts", "stragglers", "wasted compute", "wasted bytes"):
            table.add_column(header, justify="left" if header == "method" else "right")
        for name, m in methods.items():
            table.add_row(
                name, _num(m.get("final_mean_ppl"), ".2f"), _num(m.get("final_mean_acc"), ".3f"),
                _num(m.get("rounds"), ".0f"), clock(m.get("sim_time_s")),
                human_bytes(m.get("bytes_up")), human_bytes(m.get("bytes_down")),
                _num(m.get("dropouts"), ".0f"), _num(m.get("stragglers"), ".0f"),
                clock(m.get("wasted_compute_s")), human_bytes(m.get("wasted_bytes")))
        self.console.print(table)
