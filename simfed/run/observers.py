"""Observers of a run, and the run's own events beside the engine's.

Everything that watches a run is a `RunObserver`: the live view (simfed/run/progress.py), the
trackers of `output.loggers` (simfed/run/loggers.py), the trace writer and the plugins a scenario
names in `output.observers`. One is asked once per method/seed for a callable,
`observer(method, seed)` (that call is the method/seed's start), which then hears, in order:

- every `SimEvent` the engine emits (simfed/sim/events.py), silent while a resumed run replays;
- an `Evaluated` after each evaluation of the devices (the `mean` row of metrics.csv), which
  comes after the engine's `round_end` of the round it follows (round 0: the pretrained model,
  before the first event);
- one `MethodDone` when the method/seed's summary entry is written.

`close()` ends it. The run's events are not the engine's: the engine knows nothing of perplexity
(it never sees torch), so the run adds them; events.jsonl keeps the engine's only.

A plugin class is built as `cls(run_dir)` once per run; it is named like a method plugin:
`package.module:ClassName` or a `simfed.observers` entry point. `MethodCallbacks` is the
convenient base for an observer written as four calls (the view and the trackers are).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Union

from simfed.plugins import OBSERVERS_GROUP, load_object
from simfed.sim.events import SimEvent


@dataclass(frozen=True)
class Evaluated:
    """The run's event after an evaluation: the devices' mean test metrics, as metrics.csv's `mean` row."""

    t: float  # sim time of the evaluation, seconds (the round_end it follows)
    rounds_done: int  # metrics.csv's `round`: rounds completed (0 = the pretrained model)
    ppl: float  # mean perplexity over the devices
    acc: float  # mean next-token accuracy over the devices
    bytes_up: int  # cumulative for the method/seed so far
    bytes_down: int
    energy_j: float
    kind: str = "evaluated"
    device: None = None

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "kind": self.kind, "device": None, "rounds_done": self.rounds_done, "ppl": self.ppl,
                "acc": self.acc, "bytes_up": self.bytes_up, "bytes_down": self.bytes_down, "energy_j": self.energy_j}


@dataclass(frozen=True)
class MethodDone:
    """The run's last event of a method/seed: its summary.json entry is written."""

    t: float  # sim time when the engine stopped, seconds
    kind: str = "method_done"
    device: None = None

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "kind": self.kind, "device": None}


RunEvent = Union[Evaluated, MethodDone]
RUN_EVENT_KINDS = ("evaluated", "method_done")
Heard = Union[SimEvent, RunEvent]  # what a run observer's callable receives
Hear = Callable[[Heard], None]


class RunObserver(Protocol):
    def observer(self, method: str, seed: int) -> Hear: ...

    def close(self) -> None: ...


class MethodCallbacks:
    """A `RunObserver` written as four calls, each with the method's name:

    `on_method_start(method, seed)`, `on_event(method, event_dict)` for every engine event (its
    `to_dict()`), `on_metrics(method, round, mean_ppl, mean_acc)` after every evaluation and
    `on_method_done(method)`. Override the ones you need; `close()` does nothing here."""

    def on_method_start(self, method: str, seed: int | None = None) -> None:
        pass

    def on_event(self, method: str, event_dict: Mapping[str, Any]) -> None:
        pass

    def on_metrics(self, method: str, round: int, mean_ppl: float, mean_acc: float) -> None:
        pass

    def on_method_done(self, method: str) -> None:
        pass

    def observer(self, method: str, seed: int) -> Hear:
        self.on_method_start(method, seed)

        def hear(event: Heard) -> None:
            if isinstance(event, Evaluated):
                self.on_metrics(method, event.rounds_done, event.ppl, event.acc)
            elif isinstance(event, MethodDone):
                self.on_method_done(method)
            else:
                self.on_event(method, event.to_dict())

        return hear

    def close(self) -> None:
        pass


def observer_class(name: str) -> type:
    """The class `name` refers to (PluginError, one line, when there is none)."""
    return load_object(name, OBSERVERS_GROUP)


def open_observers(names: list[str], run_dir: Path) -> list[RunObserver]:
    return [observer_class(name)(run_dir) for name in names]


def close_observers(observers: list[RunObserver]) -> None:
    """Close every one, even when one fails (the first failure is raised after)."""
    failure: BaseException | None = None
    for observer in observers:
        try:
            observer.close()
        except BaseException as err:  # noqa: BLE001 - the rest must still close
            failure = failure or err
    if failure is not None:
        raise failure
