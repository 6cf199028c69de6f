"""The run recipe: load, build, simulate, measure, save — for every seed × method.

This is the only module that joins the simulated world (`simfed.sim`) and the learning
(`simfed.learn`). `MethodWorkload` is the adapter between them: it answers the engine's cost
questions from the method's shapes and FLOPs model, and does the real training when the engine
reaches a device's compute-end event.

Common random numbers: for a seed, every method sees the same fleet (`build_fleet`), the same
users' data (`build_federation`) and — through the engine's per-(seed, purpose, device, round)
streams — the same availability, dropout and noise draws.
"""
from __future__ import annotations

import dataclasses
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from simfed.config import Scenario
from simfed.data.federated import UserData, build_federation
from simfed.data.partition_record import write_partition
from simfed.errors import SimfedError
from simfed.learn.adapters import AdaptedModel
from simfed.learn.device import load_adapted_model
from simfed.learn.evaluate import evaluate_windows, evaluation_windows
from simfed.learn.memory import SHRINK_STEPS
from simfed.learn.methods.adapter_method import AdapterMethod
from simfed.learn.methods.base import (
    Budget, Checkpointable, ClientInfo, Costs, LocalPlan, Method, Update, evaluate_in_batches,
)
from simfed.learn.methods.registry import build_method
from simfed.learn.model_card import load_card
from simfed.learn.params import method_setting
from simfed.learn.survival import surviving_share
from simfed.report.plots import plot_closed_run
from simfed.report.targets import record_targets
from simfed.run.checkpoint import Checkpoints, ResumeError
from simfed.run.divergence import DivergenceGuard, method_status
from simfed.run.dry import run_dry
from simfed.run.environment import run_environment
from simfed.run.loggers import with_loggers
from simfed.run.executor import Job, LocalExecutor, make_executor
from simfed.run.observers import RunObserver, close_observers, open_observers
from simfed.run.payload import payload_bytes, shapes_bytes, travel
from simfed.run.results import RunDirectory
from simfed.run.saved_models import ModelSaver
from simfed.run.trace import TraceWriter, read_events
from simfed.sim.accounting import Tally
from simfed.sim.engine import Engine
from simfed.sim.events import SimEvent
from simfed.sim.fleet import DeviceProfile, build_fleet
from simfed.sim.workload import RoundCost


@dataclass
class Evaluation:
    """Per-device (ppl, acc, ppl's standard error) of one evaluation."""

    per_device: dict[int, tuple[float, float, float]]

    @property
    def mean_ppl(self) -> float:
        return sum(v[0] for v in self.per_device.values()) / len(self.per_device)


@dataclass
class MethodWorkload:
    """The engine's `Workload`, implemented over one `Method` for one seed."""

    method: Method
    scenario: Scenario
    seed: int
    run: RunDirectory
    tally: Tally
    view: Any
    pending: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    updates: dict[int, tuple[int, Update]] = field(default_factory=dict)  # device → (round, update)
    bases: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # async: device → payload it trained from
    training_calls: int = 0  # real local updates run (a device that drops before compute end runs none)
    n_clients: int = 0
    checkpoint: Any = None  # a MethodCheckpoint: costs logged, state saved at every round end (resume)
    replay: Any = None  # a Replay while the engine re-runs the rounds before a checkpoint: no real work
    trained: set[int] = field(default_factory=set)  # devices that trained since the last checkpoint
    executor: Any = None  # simfed/run/executor.py, bound to `method` (run_method binds a LocalExecutor if none)
    jobs: dict[int, Job] = field(default_factory=dict)  # device → local update decided, not yet run
    costed_upload: dict[int, int] = field(default_factory=dict)  # device → upload bytes the engine charged for its job
    discarded: set[int] = field(default_factory=set)  # pending jobs whose update the server will never merge
    guard: DivergenceGuard = field(default_factory=DivergenceGuard)  # non-finite updates refused (simfed/run/divergence.py)

    @property
    def dtype(self) -> str:
        return self.scenario.training.payload_dtype

    def run_jobs(self, device: int | None = None) -> None:
        """Run the held-back local updates (all of them; with `device`, only if it has one pending).

        Updates are held back until something needs them, so that an executor can run a round's
        updates side by side. Anything that reads a device's state (its cost, its download, a new
        update) first runs that device's pending update; aggregation, evaluation and checkpoints
        run them all. The order of jobs is the order the engine decided them."""
        if not self.jobs or (device is not None and device not in self.jobs):
            return
        jobs = list(self.jobs.values())
        self.jobs.clear()
        before = self.guard.snapshot(self.method, jobs)
        for job, update in zip(jobs, self.executor.run(jobs)):
            self.training_calls += 1
            self.trained.add(job.client)
            if self.guard.admit(self.method, job, update, before):
                self._accept(job, update)
            else:  # non-finite: never stored, so never merged; the server logs it when it screens the round
                self.costed_upload.pop(job.client)
                self.discarded.discard(job.client)
                self.bases.pop(job.client, None)

    def _accept(self, job: Job, update: Update) -> None:
        device = job.client
        expected = self.costed_upload.pop(device)
        if device in self.discarded:  # dropped mid-upload or too stale: trained, never merged
            self.discarded.discard(device)
            self.bases.pop(device, None)
            return
        sent = payload_bytes(update.upload, self.dtype)
        if sent != expected:  # the engine already charged `expected` bytes: they must agree
            raise RuntimeError(f"{self.method.name}: device {device} uploads {sent} bytes, costed {expected}")
        upload = travel(update.upload, self.dtype)
        self.updates[device] = (job.plan.round_index, Update(device, upload, update.n_tokens, update.train_loss, update.extra))

    def cost(self, device: int, round_index: int) -> RoundCost:
        if self.replay is not None:
            return self.replay.cost(device, round_index)
        self.run_jobs(device)
        cost = RoundCost(
            download_bytes=shapes_bytes(self.method.download_shapes(device), self.dtype),
            upload_bytes=shapes_bytes(self.method.upload_shapes(device), self.dtype),
            flops=self.method.round_flops(device),
            activation_bytes=self.method.round_activation_bytes(device),
            kept_share=surviving_share(self.method, device),  # simfed/learn/survival.py
        )
        if self.checkpoint is not None:
            self.checkpoint.log_cost(device, round_index, cost)
        return cost

    def memory_need(self, device: int) -> int | None:
        return self.method.memory_need(device)

    def on_download(self, device: int, round_index: int) -> None:
        if self.replay is not None:
            return
        self.run_jobs(device)
        self.pending[device] = travel(self.method.download(device), self.dtype)

    def on_compute_done(self, device: int, round_index: int) -> None:
        """The device's compute ends in simulated time: its local update is decided (run later,
        by `run_jobs`, with whatever else is pending)."""
        if self.replay is not None:
            return
        self.run_jobs(device)
        # what the engine charged for this upload, taken now (the method's state may move before the job runs)
        self.costed_upload[device] = shapes_bytes(self.method.upload_shapes(device), self.dtype)
        plan = LocalPlan(round_index, self.scenario.world.server.rounds, self.seed)
        received = self.pending.pop(device)
        if self.scenario.world.server.policy != "sync":  # the async merge needs the delta's base
            self.bases[device] = {k: v.clone() for k, v in received.items()}
        self.jobs[device] = Job(device, received, plan)

    def screen(self, round_index: int, devices: list[int]) -> list[int]:
        """The engine's question before a merge: which of these reports does the server refuse
        (non-finite; simfed/run/divergence.py)."""
        if self.replay is not None:
            return self.replay.refused(round_index, devices)
        self.run_jobs()
        return self.guard.screen(round_index, devices)

    def on_aggregate(self, round_index: int, devices: list[int], weights: list[float] | None = None) -> None:
        if self.replay is not None:
            return
        self.run_jobs()
        if weights is not None:  # FedBuff/FedAsync: buffered deltas, each from the payload its device downloaded
            accepted = [self.updates.pop(d)[1] for d in devices]
            self.method.aggregate_async(accepted, [self.bases.pop(d) for d in devices], list(weights), round_index)
            return  # updates still in flight stay stored until merged, or dropped/stale (on_event)
        accepted = [self.updates.pop(d)[1] for d in devices]
        # updates of this round that did not make it (stragglers) are never merged later
        for d in [d for d, (r, _) in self.updates.items() if r <= round_index]:
            del self.updates[d]
        self.guard.forget_through(round_index)
        self.method.aggregate(accepted, round_index)

    def on_event(self, event: SimEvent) -> None:
        """An observer: an update whose device dropped (mid-upload) or that came too stale is never merged."""
        if self.replay is None and event.kind in ("dropped", "stale") and event.device is not None:
            if event.device in self.jobs:  # it still trains (its private state keeps that), unmerged
                self.discarded.add(event.device)
            self.updates.pop(event.device, None)
            self.bases.pop(event.device, None)
            self.guard.forget(event.device)
            if event.kind == "dropped":  # dropped before its compute ended: its payload is never trained on
                self.pending.pop(event.device, None)

    def on_round_end(self, round_index: int, sim_time_s: float) -> None:
        if self.replay is not None:  # resuming: the rounds up to the checkpoint were done and written
            if round_index == self.replay.round:
                self.replay.finish(self)  # the in-flight state as checkpointed; real work from here
            return
        self.run_jobs()
        rounds = self.scenario.world.server.rounds
        done = round_index + 1
        if done % self.scenario.training.eval_every == 0 or done == rounds:
            self.log(done, sim_time_s, evaluate_all(self.method, self.n_clients, self.scenario.executor.batch_devices))
        ModelSaver(self.scenario.output.save_models, self.run.path).on_round_end(self.method, self.seed, self.n_clients, done)
        if self.checkpoint is not None:
            self.checkpoint.save(round_index, self.method, self)

    def log(self, round_done: int, sim_time_s: float, evaluation: Evaluation) -> None:
        t = self.tally
        row = self.run.log_evaluation(
            self.method.name, self.seed, round_done, sim_time_s, t.bytes_up, t.bytes_down, t.energy_j,
            per_device=evaluation.per_device,
        )
        self.view.on_metrics(self.method.name, round_done, row["ppl"], row["acc"])
        if self.scenario.training.save_routing:  # opt-in analysis: per-layer routing weights
            from simfed.learn.routing import ROUTING_FILE, record_routing
            record_routing(self.run.path / ROUTING_FILE, self.method, self.seed, round_done, self.n_clients)


def setup_method(spec: Any, training: Any, model: AdaptedModel, clients: list[ClientInfo], seed: int,
                 fleet: list[DeviceProfile], memory_policy: str) -> tuple[Method, list[ClientInfo]]:
    """Build and set up the method; with memory_policy `shrink`, size each device whose training
    does not fit its RAM as if it had half the memory, again, until it fits or its size stops
    shrinking (at most SHRINK_STEPS halvings; the engine then excludes it). Returns the method and the clients it was set up with
    (their budgets as the method saw them)."""
    method = build_method(spec, training, model)
    if not isinstance(method, Costs):
        raise SimfedError(f"method {spec.name!r}: its class does not answer the simulated world's cost "
                          "questions (derive it from simfed.learn.methods.base.Costs)")
    method.setup(clients, seed)
    if memory_policy != "shrink":
        return method, clients
    for _ in range(SHRINK_STEPS):
        needs = {c.client_id: method.memory_need(c.client_id) for c in clients}
        too_big = {c for c, n in needs.items() if n is not None and n > fleet[c].memory_bytes}
        if not too_big:
            break
        clients = [dataclasses.replace(c, budget=Budget(c.budget.memory_bytes / 2, c.budget.flops_per_s))
                   if c.client_id in too_big else c for c in clients]
        method = build_method(spec, training, model)
        method.setup(clients, seed)
    return method, clients  # devices that still do not fit (even the smallest size): the engine excludes them


def evaluate_all(method: Method, n_clients: int, batch_devices: int = 1) -> Evaluation:
    """Every device's test metrics, `batch_devices` devices a forward where the method allows it."""
    found = evaluate_in_batches(method, list(range(n_clients)), "test", batch_devices)
    return Evaluation({c: (r.ppl, r.acc, r.ppl_se) for c, r in enumerate(found)})


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
    view: Any
    watchers: list[RunObserver]  # the trace writer and the scenario's observer plugins


def run_scenario(scenario: Scenario, scenario_path: Path, out_root: Path | None, seeds: list[int], view: Any,
                 resume: Path | None = None) -> Path:
    """Run every method of `scenario` for every seed; returns the run directory.

    With `resume` (a run directory of this scenario, see simfed/run/checkpoint.py), go on from its
    last checkpoint: finished method/seed pairs are skipped, the interrupted one continues from its
    last completed round, the rest run as usual. (`scenario_path` is unused: kept for callers.)"""
    out_root = Path(out_root or scenario.output.dir)
    if scenario.training.dry:  # systems only: no weights, no data, no training (simfed/run/dry.py)
        if resume is not None:
            raise ResumeError("dry runs are not checkpointed (they take seconds): run the scenario again")
        return run_dry(scenario, out_root, seeds, view)
    if scenario.training.threads:
        torch.set_num_threads(scenario.training.threads)
    card = load_card(scenario.model)
    training = scenario.training
    model = load_adapted_model(card, training.device, training.precision, training.expert_compute)
    checkpoints = (Checkpoints.start(RunDirectory.create(out_root, scenario.name, scenario.resolved_yaml(), seeds))
                   if resume is None else Checkpoints.reopen(resume, seeds))
    run = checkpoints.run
    run.environment = run_environment(model.device, model.autocast)  # into summary.json (simfed/run/environment.py)
    run.write_summary()
    view = with_loggers(view, scenario.output.loggers, run.path)  # output.loggers beside the live view
    executor = make_executor(scenario.executor, card, training)
    try:
        with run, TraceWriter(run.path / "trace.json") as trace, _closing(executor), _closing(view):
            if resume is not None:  # the timeline so far, redrawn from the events kept
                trace.add_events(read_events(run.path))
            observers = open_observers(scenario.output.observers, run.path)
            session = Session(scenario, model, run, checkpoints, executor, view, [trace, *observers])
            try:
                for seed in seeds:
                    run_seed(session, seed)
            finally:
                close_observers(observers)
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
        saved = checkpoints.method(index, spec.name, seed)
        if saved.round is None:
            checkpoints.restore_rng_once()  # a resumed run's first fresh method: RNG as checkpointed
            if pretrained is None:
                pretrained = evaluate_pretrained(session.model, users, training.seq_len, training.eval_windows)
        try:
            run_method(scenario, method, seed, fleet, pretrained, session.run, session.view,
                       [w.observer(spec.name, seed) for w in session.watchers],
                       checkpoint=saved if isinstance(method, Checkpointable) else None, executor=session.executor)
        finally:
            saved.close()
        checkpoints.finished(index, seed)
        shutil.rmtree(spill, ignore_errors=True)  # spilled states of a finished method


def run_method(
    scenario: Scenario, method: Method, seed: int, fleet: list[DeviceProfile],
    pretrained: Evaluation | None, run: RunDirectory, view: Any, observers: list[Callable[[SimEvent], None]] = (),
    checkpoint: Any = None, executor: Any = None,
) -> MethodWorkload:
    """Run one method for one seed. With a `checkpoint` (simfed/run/checkpoint.py) the costs are
    logged and the state saved at every round end; if it holds a saved round, the run resumes
    there: the engine replays the rounds before it without real work or output (`Replay`)."""
    view.on_method_start(method.name, seed)
    tally = Tally()
    if executor is None:  # a caller that runs one method by itself: in process
        executor = LocalExecutor()
        executor.bind(method, 0, [], seed)
    workload = MethodWorkload(method, scenario, seed, run, tally, view, n_clients=len(fleet), checkpoint=checkpoint,
                              executor=executor)
    if checkpoint is not None and checkpoint.round is not None:
        workload.replay = checkpoint.load(method)
        workload.replay.check_world(scenario.world, f"{method.name} seed {seed}")  # simfed/run/replay_check.py

    def live(observe: Callable[[SimEvent], None]) -> Callable[[SimEvent], None]:
        """`observe`, silent while replaying (those events are already in events.jsonl and trace)."""
        return lambda event: None if workload.replay is not None else observe(event)

    def record(event: SimEvent) -> None:
        data = event.to_dict()
        run.log_event(method.name, seed, data)
        view.on_event(method.name, data)

    if workload.replay is None:
        workload.log(0, 0.0, pretrained)
    observers = [live(observe) for observe in (record, workload.on_event, *observers)]
    engine = Engine(scenario.world, fleet, workload, seed, observers=[tally, *observers])
    engine.run()
    if workload.replay is not None:  # the engine ended before the checkpointed round did
        raise ResumeError(f"resume: {method.name} seed {seed}: the replay never reached round {workload.replay.round}")
    ModelSaver(scenario.output.save_models, run.path).on_method_end(method, seed, len(fleet))
    stats = tally.as_summary()
    stats["training_calls"] = workload.training_calls
    # updates decided after the last evaluation (stragglers still computing): nothing measured
    # depends on them, so they are never run (their time, bytes and energy are in the tally)
    stats["training_skipped"] = len(workload.jobs)
    stats["status"] = method_status(tally.diverged, tally.updates_aggregated)  # simfed/run/divergence.py
    if scenario.world.memory_policy != "ignore":
        stats["memory_excluded"] = len(engine.excluded)  # devices never selected: the training does not fit
    stats["setting"] = method_setting(method, len(fleet))  # matching rule, LB form, parameters per device
    run.finish_method(method.name, seed, stats, measured_model=method.measured_model)
    view.on_method_done(method.name)
    return workload
