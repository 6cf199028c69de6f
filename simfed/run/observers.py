"""Observers a scenario names (`output.observers`): code outside simfed that watches a run's events.

An observer plugin is a class built as `cls(run_dir)` once per run, with the two methods the trace
writer has: `observer(method, seed)` → a callable that receives every `SimEvent` of that
method/seed as the engine emits it (silent while a resumed run replays), and `close()` at the end.
Named like a method plugin: `package.module:ClassName` or a `simfed.observers` entry point.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

from simfed.plugins import OBSERVERS_GROUP, load_object
from simfed.sim.events import SimEvent


class RunObserver(Protocol):
    def observer(self, method: str, seed: int) -> Callable[[SimEvent], None]: ...

    def close(self) -> None: ...


def observer_class(name: str) -> type:
    """The class `name` refers to (PluginError, one line, when there is none)."""
    return load_object(name, OBSERVERS_GROUP)


def open_observers(names: list[str], run_dir: Path) -> list[RunObserver]:
    return [observer_class(name)(run_dir) for name in names]


def close_observers(observers: list[RunObserver]) -> None:
    for observer in observers:
        observer.close()
