"""Trackers: observers of a run with the live view's interface, chosen by `output.loggers`.

Every observer of a run answers the four calls the runner makes on the live view
(simfed/run/progress.py): `on_method_start(method, seed)`, `on_event(method, event_dict)`,
`on_metrics(method, round, mean_ppl, mean_acc)` and `on_method_done(method)`, plus `close()`.
`Fanout` hands each call to the view and to every logger, so the runner keeps talking to one
object. `TensorBoardLogger` is the first logger; TensorBoard itself is an optional extra
(`pip install 'simfed[tensorboard]'`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from simfed.errors import SimfedError
from simfed.run.progress import MethodState

TENSORBOARD_DIR = "tensorboard"


class TensorBoardLogger:
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


class Fanout:
    """The live view and the loggers as one observer; other attributes are the view's."""

    def __init__(self, view: Any, loggers: Sequence[Any]) -> None:
        self.view = view
        self.loggers = list(loggers)

    def _all(self) -> list[Any]:
        return [self.view, *self.loggers]

    def on_method_start(self, method: str, seed: int | None = None) -> None:
        for o in self._all():
            o.on_method_start(method, seed)

    def on_event(self, method: str, event_dict: Mapping[str, Any]) -> None:
        for o in self._all():
            o.on_event(method, event_dict)

    def on_metrics(self, method: str, round: int, mean_ppl: float, mean_acc: float) -> None:
        for o in self._all():
            o.on_metrics(method, round, mean_ppl, mean_acc)

    def on_method_done(self, method: str) -> None:
        for o in self._all():
            o.on_method_done(method)

    def close(self) -> None:
        """Close the loggers (the view is closed by whoever opened it)."""
        for logger in self.loggers:
            logger.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.view, name)


def with_loggers(view: Any, names: Sequence[str], run_dir: Path) -> Fanout:
    return Fanout(view, [LOGGERS[name](run_dir) for name in names])
