"""Trackers, the observers a scenario names in `output.loggers`, and the opening of a scenario's observers.

A tracker is a run observer like any other (simfed/run/observers.py), written as the four calls
of `MethodCallbacks`, built as `cls(run_dir)`. `TensorBoardLogger` is the first; TensorBoard
itself is an optional extra (`pip install 'simfed[tensorboard]'`).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from simfed.errors import SimfedError
from simfed.run.observers import MethodCallbacks, RunObserver, close_observers, open_observers
from simfed.run.progress import MethodState

TENSORBOARD_DIR = "tensorboard"


class TensorBoardLogger(MethodCallbacks):
    """Scalars per method and seed in RUN_DIR/tensorboard/<method>/seed<seed>/ (one TensorBoard
    run each): `ppl`, `acc`, `bytes_up`, `bytes_down` against the round (`.../by_round`) and
    against simulated seconds (`.../by_sim_s`, step = whole simulated seconds; TensorBoard's
    x-axis is an integer step), both written at every evaluation."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise SimfedError(f"output.loggers: tensorboard needs the tensorboard package "
                              f"(pip install 'simfed[tensorboard]'): {err}") from None
        self._writer_class = SummaryWriter
        self.root = Path(run_dir) / TENSORBOARD_DIR
        self.states: dict[str, MethodState] = {}
        self.writers: dict[tuple[str, int | None], Any] = {}

    def _writer(self, method: str) -> Any:
        key = (method, self.states[method].seed)
        if key not in self.writers:
            seed = "" if key[1] is None else f"seed{key[1]}"
            self.writers[key] = self._writer_class(log_dir=str(self.root / method / seed))
        return self.writers[key]

    def on_method_start(self, method: str, seed: int | None = None) -> None:
        self.states[method] = MethodState(status="running", seed=seed)

    def on_event(self, method: str, event_dict: Mapping[str, Any]) -> None:
        self.states.setdefault(method, MethodState()).apply(event_dict)

    def on_metrics(self, method: str, round: int, mean_ppl: float, mean_acc: float) -> None:
        state = self.states.setdefault(method, MethodState())
        writer = self._writer(method)
        sim_s = int(state.t + 0.5)  # whole simulated seconds
        for name, value in (("ppl", mean_ppl), ("acc", mean_acc), ("bytes_up", state.bytes_up),
                            ("bytes_down", state.bytes_down)):
            writer.add_scalar(f"{name}/by_round", value, round)
            writer.add_scalar(f"{name}/by_sim_s", value, sim_s)
        writer.flush()

    def on_method_done(self, method: str) -> None:
        state = self.states.get(method)
        if state is not None:
            self._writer(method).flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


LOGGERS = {"tensorboard": TensorBoardLogger}


@dataclass
class ScenarioObservers:
    """The observers a scenario names: `output.loggers` (built in: LOGGERS) and `output.observers` (plugins)."""

    loggers: list[RunObserver]
    plugins: list[RunObserver]


@contextmanager
def scenario_observers(scenario: Any, run_dir: Path) -> Iterator[ScenarioObservers]:
    """Open the scenario's loggers and observer plugins on `run_dir`; close them all however the run ends."""
    own = ScenarioObservers([], [])
    try:
        own.loggers.extend(LOGGERS[name](run_dir) for name in scenario.output.loggers)
        own.plugins.extend(open_observers(scenario.output.observers, run_dir))
        yield own
    finally:
        close_observers([*own.loggers, *own.plugins])
