"""The one run loop of a method/seed, real or dry: a workload through the engine, its events recorded.

A real run (simfed/run/runner.py: the live workload, or a resume's `Handover`) and a dry one
(simfed/run/dry.py: costs only) differ only in the workload they hand the engine. Everything
around it is written here once: every event goes to events.jsonl and the run's observers (the
live view, the loggers, the trace, plugins: simfed/run/observers.py), the tally counts, the
method's summary.json entry is written from the tally, and the observers hear it is done.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from simfed.config import Scenario
from simfed.run.observers import Hear, MethodDone
from simfed.run.results import RunDirectory
from simfed.sim.accounting import Tally
from simfed.sim.engine import Engine, Observer
from simfed.sim.events import SimEvent
from simfed.sim.fleet import DeviceProfile
from simfed.sim.workload import Workload


@dataclass(frozen=True)
class Stage:
    """Where one method/seed is simulated and recorded."""

    scenario: Scenario
    fleet: list[DeviceProfile]
    seed: int
    run: RunDirectory
    observers: tuple[Hear, ...] = ()  # the run's observers of this method/seed (simfed/run/observers.py)


def simulate(stage: Stage, name: str, workload: Workload, tally: Tally, observers: Sequence[Observer],
             quiet: Callable[[Observer], Observer] = lambda observe: observe) -> Engine:
    """Run the engine over `workload`; returns it once the run stopped (its `excluded`, `sim_time_s`).

    Every event reaches the tally, then events.jsonl, then `observers`; those two are wrapped by
    `quiet` (a resume's replay silences them: simfed/run/replay.py)."""

    def record(event: SimEvent) -> None:
        stage.run.log_event(name, stage.seed, event.to_dict())

    watchers = [quiet(observe) for observe in (record, *observers)]
    engine = Engine(stage.scenario.world, stage.fleet, workload, stage.seed, observers=[tally, *watchers])
    engine.run()
    return engine


def method_stats(stage: Stage, tally: Tally, engine: Engine, counts: dict[str, Any],
                 setting: dict[str, Any] | None = None) -> dict[str, Any]:
    """A method/seed's summary.json entry: the tally, the workload's `counts`, the devices the
    memory policy left out, and (real runs) the method's setting, in that order."""
    stats = {**tally.as_summary(), **counts}
    if stage.scenario.world.memory_policy != "ignore":
        stats["memory_excluded"] = len(engine.excluded)  # devices never selected: the training does not fit
    if setting is not None:
        stats["setting"] = setting  # matching rule, LB form, parameters per device
    return stats


def finish(stage: Stage, name: str, engine: Engine, stats: dict[str, Any], measured_model: str | None = None) -> None:
    """The method/seed is done: its summary entry written, its observers told (`MethodDone`)."""
    stage.run.finish_method(name, stage.seed, stats, measured_model=measured_model)
    done = MethodDone(engine.sim_time_s)
    for hear in stage.observers:
        hear(done)
