"""An observer plugin: one line per round end of every method/seed in RUN_DIR/rounds.tsv.

Named in a scenario as `output: {observers: ["my_method.observers:RoundLog"]}`; simfed builds it
with the run directory, asks it for one callable per method/seed, and closes it at the end. The
callable hears the engine's events (`SimEvent`) and the run's own (`Evaluated`, `MethodDone`:
simfed/run/observers.py); this one keeps the engine's round ends.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from simfed.run.observers import Heard


class RoundLog:
    def __init__(self, run_dir: Path) -> None:
        self.file = open(Path(run_dir) / "rounds.tsv", "a", encoding="utf-8")

    def observer(self, method: str, seed: int) -> Callable[[Heard], None]:
        def observe(event: Heard) -> None:
            if event.kind == "round_end":
                self.file.write(f"{method}\t{seed}\t{event.round}\t{event.t:.3f}\t{event.reason}\n")

        return observe

    def close(self) -> None:
        self.file.close()
