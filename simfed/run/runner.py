"""The run recipe: load, build, simulate, measure, save — for every seed × method.

This is where the simulated world (`simfed.sim`) and the learning (`simfed.learn`) are put
together. The adapter between them is the live workload (`MethodWorkload`, simfed/run/workload.py):
it answers the engine's cost questions from the method's cost model, and does the real training
when the engine reaches a device's compute-end event. A resumed method is driven first by its
`Replay` (simfed/run/replay.py).

Common random numbers: for a seed, every method sees the same fleet (`build_fleet`), the same
users' data (`build_federation`) and — through the engine's per-(seed, purpose, device, round)
streams — the same availability, dropout and noise draws.
"""
from __future__ import annotations

import dataclasses
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch

from simfed.config import Scenario
from simfed.data.federated import UserData, build_federation
from simfed.data.partition_record import write_partition
from simfed.errors import SimfedError
from simfed.learn.adapters import AdaptedModel
from simfed.learn.device import load_adapted_model, settle_cpu_precision
from simfed.learn.evaluate import evaluate_windows, evaluation_windows
from simfed.learn.memory import shrink_search
from simfed.learn.methods.adapter_method import AdapterMethod
from simfed.learn.methods.base import Budget, Checkpointable, ClientInfo, Costs, Method
from simfed.learn.methods.registry import build_method
from simfed.learn.model_card import load_card
from simfed.learn.params import method_setting
from simfed.report.plots import plot_closed_run
from simfed.report.targets import record_targets
from simfed.run.checkpoint import Checkpoints, MethodCheckpoint, ResumeError
from simfed.run.divergence import method_status
from simfed.run.dry import run_dry
from simfed.run.environment import run_environment
from simfed.run.executor import LocalExecutor, make_executor
from simfed.run.host_memory import keep_freed_memory
from simfed.run.loggers import scenario_observers
from simfed.run.observers import Hear, RunObserver
from simfed.run.replay import Handover, Replay
from simfed.run.results import RunDirectory
from simfed.run.saved_models import ModelSaver
from simfed.run.simulate import Stage, finish, method_stats, simulate
from simfed.run.trace import TraceWriter, read_events
from simfed.run.workload import Evaluation, MethodWorkload
from simfed.sim.accounting import Tally
from simfed.sim.fleet import DeviceProfile, build_fleet


def setup_method(spec: Any, training: Any, model: AdaptedModel, clients: list[ClientInfo], seed: int,
                 fleet: list[DeviceProfile], memory_policy: str) -> tuple[Method, list[ClientInfo]]:
    """Build and set up the method; with memory_policy `shrink`, each device whose training does
    not fit its RAM sized by a smaller memory figure (`shrink_search`, simfed/learn/memory.py; a
    device that fits no size is excluded by the engine). Returns the method and the clients it was
    set up with (their budgets as the method saw them)."""

    def built(sized: list[ClientInfo]) -> Method:
        method = build_method(spec, training, model)
        if not isinstance(method, Costs):
            raise SimfedError(f"method {spec.name!r}: its class does not answer the simulated world's cost "
                              "questions (derive it from simfed.learn.methods.base.Costs)")
        method.setup(sized, seed)
        return method

    if memory_policy != "shrink":
        return built(clients), clients
    last: dict[str, Any] = {}

    def needs(figures: list[float]) -> list[int | None]:  # the method set up at `figures`, kept for the end
        sized = with_memory(clients, figures)
        last["figures"], last["method"] = list(figures), (method := built(sized))
        return [method.memory_need(c.client_id) for c in sized]

    figures = shrink_search([c.budget.memory_bytes for c in clients], [fleet[c.client_id].memory_bytes for c in clients],
                            needs)
    sized = with_memory(clients, figures)
    if figures != last["figures"]:  # the last halving was never set up (the search gave up)
        return built(sized), sized
    return last["method"], sized


def with_memory(clients: list[ClientInfo], figures: list[float]) -> list[ClientInfo]:
    """`clients` with these memory figures in their budgets (the same entries where unchanged)."""
    return [c if m == c.budget.memory_bytes else dataclasses.replace(c, budget=Budget(m, c.budget.flops_per_s))
            for c, m in zip(clients, figures)]


def evaluate_pretrained(model: AdaptedModel, users: list[UserData], seq_len: int, n_windows: int) -> Evaluation:
    """Every device's test metrics on the bare base model.

    Every method starts from adapters whose LoRA B is zero, which leave the base model's function
    unchanged exactly, so this is also each method's round-0 evaluation: computed once per seed.
    """
    results = {}
    for c, user in enumerate(users):
        r = evaluate_windows(model, None, evaluation_windows(user.test, seq_len, n_windows))
        results[c] = (r.ppl, r.acc, r.ppl_se)
    return Evaluation(results)


def clients_of(fleet: list[DeviceProfile], users: list[UserData]) -> list[ClientInfo]:
    return [ClientInfo(d.device_id, Budget(float(d.memory_bytes), d.flops_per_s), users[d.device_id]) for d in fleet]


@contextmanager
def _closing(executor: Any) -> Iterator[Any]:
    try:
        yield executor
    finally:
        executor.close()


@dataclass(frozen=True)
class Session:
    """What every method/seed of one `run_scenario` call shares."""

    scenario: Scenario
    model: AdaptedModel
    run: RunDirectory
    checkpoints: Checkpoints
    executor: Any  # simfed/run/executor.py
    watchers: list[RunObserver]  # the caller's (the live view), the loggers, the trace writer, the plugins


def run_scenario(scenario: Scenario, out_root: Path | None, seeds: list[int],
                 observers: Sequence[RunObserver] = (), resume: Path | None = None) -> Path:
    """Run every method of `scenario` for every seed; returns the run directory.

    `observers` (the caller's, e.g. the live view of simfed/run/progress.py) hear the run beside
    the scenario's own: its `output.loggers`, the trace writer and its `output.observers`
    (simfed/run/observers.py). The caller closes its observers; the run closes its own.
    With `resume` (a run directory of this scenario, see simfed/run/checkpoint.py), go on from its
    last checkpoint: finished method/seed pairs are skipped, the interrupted one continues from its
    last completed round, the rest run as usual."""
    out_root = Path(out_root or scenario.output.dir)
    if scenario.training.dry:  # systems only: no weights, no data, no training (simfed/run/dry.py)
        if resume is not None:
            raise ResumeError("dry runs are not checkpointed (they take seconds): run the scenario again")
        return run_dry(scenario, out_root, seeds, observers)
    if scenario.training.threads:
        torch.set_num_threads(scenario.training.threads)
    malloc = keep_freed_memory()  # a step's activations are reused, not faulted in again (host_memory.py)
    card = load_card(scenario.model)
    training = scenario.training
    model = load_adapted_model(card, training)
    choice = settle_cpu_precision(model, training)  # auto on a CPU: bf16 only where measured faster
    if choice is not None:
        training = training.model_copy(update={"precision": choice.precision})  # Ray replicas alike
    checkpoints = (Checkpoints.start(RunDirectory.create(out_root, scenario.name, scenario.resolved_yaml(), seeds))
                   if resume is None else Checkpoints.reopen(resume, seeds))
    run = checkpoints.run
    run.environment = run_environment(model.device, model.autocast)  # into summary.json (simfed/run/environment.py)
    run.environment["malloc"] = malloc
    if choice is not None:
        run.environment["precision_choice"] = choice.reason
    run.write_summary()
    executor = make_executor(scenario.executor, card, training)
    try:
        with run, TraceWriter(run.path / "trace.json") as trace, _closing(executor):
            if resume is not None:  # the timeline so far, redrawn from the events kept
                trace.add_events(read_events(run.path))
            with scenario_observers(scenario, run.path) as own:
                session = Session(scenario, model, run, checkpoints, executor, [*observers, *own.loggers, trace, *own.plugins])
                for seed in seeds:
                    run_seed(session, seed)
    finally:
        record_targets(run)  # however the run ended, from the files it closed
        plot_closed_run(run)
    return run.path


def run_seed(session: Session, seed: int) -> None:
    """Every method of the scenario not yet done for `seed`, on the same fleet and users' data."""
    scenario, training, checkpoints = session.scenario, session.scenario.training, session.checkpoints
    todo = [(i, spec) for i, spec in enumerate(scenario.methods) if not checkpoints.done(i, seed)]
    if not todo:
        return
    fleet = build_fleet(scenario.world, seed)
    users = build_federation(scenario.data, session.model.base.tokenizer, len(fleet), seed)
    if scenario.data.partition is not None:  # each device's sizes and mixture, for the record
        write_partition(session.run.path / "partition.json", scenario.data, len(fleet), seed)
    clients = clients_of(fleet, users)
    pretrained = None
    for index, spec in todo:
        method, sized = setup_method(spec, training, session.model, clients, seed, fleet, scenario.world.memory_policy)
        spill = session.run.path / "spill"
        if training.state_memory_mb is not None and isinstance(method, AdapterMethod):
            method.fed.store.limit(spill / f"{index}-{spec.name}-seed{seed}", int(training.state_memory_mb * 1e6))
        session.executor.bind(method, index, sized, seed)
        saved = checkpoints.method(index, spec.name, seed, scenario.world)
        if saved.round is None:
            checkpoints.restore_rng_once()  # a resumed run's first fresh method: RNG as checkpointed
            if pretrained is None:
                pretrained = evaluate_pretrained(session.model, users, training.seq_len, training.eval_windows)
        try:
            run_method(scenario, method, seed, fleet, pretrained, session.run,
                       [w.observer(spec.name, seed) for w in session.watchers],
                       checkpoint=saved if isinstance(method, Checkpointable) else None, executor=session.executor)
        finally:
            saved.close()
        checkpoints.finished(index, seed)
        shutil.rmtree(spill, ignore_errors=True)  # spilled states of a finished method


def run_method(
    scenario: Scenario, method: Method, seed: int, fleet: list[DeviceProfile],
    pretrained: Evaluation | None, run: RunDirectory, observers: Sequence[Hear] = (),
    checkpoint: MethodCheckpoint | None = None, executor: Any = None,
) -> MethodWorkload:
    """Run one method for one seed; `observers` hear its events (simfed/run/observers.py). With a `checkpoint` (simfed/run/checkpoint.py) the costs are
    logged and the state saved at every round end; if it holds a saved round, the run resumes
    there: a `Replay` drives the engine through the rounds before it without real work or output,
    then hands it over to the live workload (simfed/run/replay.py)."""
    stage = Stage(scenario, fleet, seed, run, tuple(observers))
    tally = Tally()
    if executor is None:  # a caller that runs one method by itself: in process
        executor = LocalExecutor()
        executor.bind(method, 0, [], seed)
    live = MethodWorkload(method, scenario, seed, run, tally, stage.observers, executor, n_clients=len(fleet), checkpoint=checkpoint)
    if checkpoint is not None and checkpoint.round is not None:
        replay = Replay(checkpoint.load(method), live)
        replay.check_world(scenario.world, f"{method.name} seed {seed}")  # simfed/run/replay_check.py
        handover = Handover(replay, live)
        engine = simulate(stage, method.name, handover, tally, [live.on_event, *stage.observers], handover.unless_replaying)
        if handover.replaying:  # the engine ended before the checkpointed round did
            raise ResumeError(f"resume: {method.name} seed {seed}: the replay never reached round {replay.round}")
    else:
        live.log(0, 0.0, pretrained)
        engine = simulate(stage, method.name, live, tally, [live.on_event, *stage.observers])
    ModelSaver(scenario.output.save_models, run.path).on_method_end(method, seed, len(fleet))
    counts = {
        "training_calls": live.training_calls,
        # updates decided after the last evaluation (stragglers still computing): nothing measured
        # depends on them, so they are never run (their time, bytes and energy are in the tally)
        "training_skipped": len(live.jobs),
        "status": method_status(tally.diverged, tally.updates_aggregated),  # simfed/run/divergence.py
    }
    stats = method_stats(stage, tally, engine, counts, setting=method_setting(method, len(fleet)))
    finish(stage, method.name, engine, stats, method.measured_model)
    return live
