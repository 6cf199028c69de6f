"""The live workload: the engine's `Workload` over one learning `Method` for one seed.

`MethodWorkload` answers the engine's cost questions from the method's cost model (`Costs`) and
does the real work when the engine reaches a device's events: the download is snapshotted, the
local update is decided at compute end and run later with the others (`run_jobs`), the server
merges at aggregation, the devices are evaluated at a round's end.

What it holds between events — payloads downloaded by devices still computing, updates not yet
merged, async bases, the divergence guard's record — is the run's *in-flight* state. At a round's
end (every held-back job run) that state is one frozen value, `InFlight`: `export()` gives it,
`restore()` takes it back, and a checkpoint persists exactly that value (simfed/run/checkpoint.py)
without reaching into the workload. A resumed method is driven by `simfed.run.replay.Replay` up to
its checkpointed round, which then restores the `InFlight` here and hands the engine over.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

import torch

from simfed.config import Scenario
from simfed.learn.methods.base import LocalPlan, Method, Update, evaluate_in_batches
from simfed.learn.survival import surviving_share
from simfed.run.divergence import DivergenceGuard
from simfed.run.executor import Job
from simfed.run.observers import Evaluated, Hear
from simfed.run.payload import payload_bytes, shapes_bytes, travel
from simfed.run.results import RunDirectory
from simfed.run.saved_models import ModelSaver
from simfed.sim.accounting import Tally
from simfed.sim.events import SimEvent
from simfed.sim.workload import RoundCost

Payload = dict[str, torch.Tensor]


@dataclass
class Evaluation:
    """Per-device (ppl, acc, ppl's standard error) of one evaluation."""

    per_device: dict[int, tuple[float, float, float]]

    @property
    def mean_ppl(self) -> float:
        return sum(v[0] for v in self.per_device.values()) / len(self.per_device)


def evaluate_all(method: Method, n_clients: int, batch_devices: int = 1) -> Evaluation:
    """Every device's test metrics, `batch_devices` devices a forward where the method allows it."""
    found = evaluate_in_batches(method, list(range(n_clients)), "test", batch_devices)
    return Evaluation({c: (r.ppl, r.acc, r.ppl_se) for c, r in enumerate(found)})


@dataclass(frozen=True)
class InFlight:
    """The live workload's state at a round's end that the method's own state does not hold.

    Taken when no local update is held back (every job has run), so what is in flight is data,
    not work: what a checkpoint must keep for the run to go on exactly. The mappings are the
    workload's own at export time (copied; the tensors are shared: a writer clones them)."""

    pending: Mapping[int, Payload]  # device → payload it downloaded, its compute not yet ended
    updates: Mapping[int, tuple[int, Update]]  # device → (round it trained in, its update), not yet merged
    bases: Mapping[int, Payload]  # async: device → the payload its pending update trained from
    refused: Mapping[int, int]  # device → round of its non-finite update, not yet screened (divergence.py)
    screened: tuple[tuple[int, int], ...]  # (round, device) the server refused as non-finite, in order
    training_calls: int  # real local updates run so far
    trained: frozenset[int] = frozenset()  # devices that trained since the last export (not restored)


class CheckpointSink(Protocol):
    """Where the live workload sends what a resume needs (simfed/run/checkpoint.py's MethodCheckpoint)."""

    def log_cost(self, device: int, round_index: int, cost: RoundCost) -> None: ...

    def save(self, round_index: int, method: Any, flight: InFlight, tally: Tally) -> None: ...


@dataclass
class MethodWorkload:
    """The engine's `Workload`, implemented over one `Method` for one seed."""

    method: Method
    scenario: Scenario
    seed: int
    run: RunDirectory
    tally: Tally
    observers: Sequence[Hear]  # the run's observers of this method/seed: each hears an `Evaluated` after an evaluation
    executor: Any  # simfed/run/executor.py, bound to `method`
    n_clients: int = 0
    checkpoint: CheckpointSink | None = None  # costs logged, state saved at every round end (resume)
    pending: dict[int, Payload] = field(default_factory=dict)  # device → payload downloaded, compute not ended
    updates: dict[int, tuple[int, Update]] = field(default_factory=dict)  # device → (round, update)
    bases: dict[int, Payload] = field(default_factory=dict)  # async: device → payload it trained from
    training_calls: int = 0  # real local updates run (a device that drops before compute end runs none)
    trained: set[int] = field(default_factory=set)  # devices that trained since the last checkpoint
    jobs: dict[int, Job] = field(default_factory=dict)  # device → local update decided, not yet run
    costed_upload: dict[int, int] = field(default_factory=dict)  # device → upload bytes the engine charged for its job
    discarded: set[int] = field(default_factory=set)  # pending jobs whose update the server will never merge
    guard: DivergenceGuard = field(default_factory=DivergenceGuard)  # non-finite updates refused (simfed/run/divergence.py)

    @property
    def dtype(self) -> str:
        return self.scenario.training.payload_dtype

    # ------------------------------------------------------------ the in-flight value

    def export(self) -> InFlight:
        """The in-flight state as one value (at a round's end: no job may be held back)."""
        if self.jobs:
            raise RuntimeError(f"{self.method.name}: in-flight state exported with {len(self.jobs)} jobs held back")
        return InFlight(dict(self.pending), dict(self.updates), dict(self.bases), dict(self.guard.refused),
                        tuple(self.guard.screened), self.training_calls, frozenset(self.trained))

    def restore(self, flight: InFlight) -> None:
        """Go on from `flight` (a resumed run: the method's own state is already loaded)."""
        self.pending, self.updates, self.bases = dict(flight.pending), dict(flight.updates), dict(flight.bases)
        self.guard = DivergenceGuard(dict(flight.refused), list(flight.screened))
        self.training_calls = flight.training_calls
        self.trained = set()  # the restored client states are the checkpoint's own files

    # ------------------------------------------------------------ held-back local updates

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

    # ------------------------------------------------------------ the engine's questions and events

    def cost(self, device: int, round_index: int) -> RoundCost:
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

    def aggregation_flops(self, devices: list[int]) -> float:
        """The server's merge FLOPs (simfed/learn/merge_flops.py): from the shapes set up at the
        start, so the same when replayed."""
        return self.method.aggregation_flops(devices)

    def on_download(self, device: int, round_index: int) -> None:
        self.run_jobs(device)
        self.pending[device] = travel(self.method.download(device), self.dtype)

    def on_compute_done(self, device: int, round_index: int) -> None:
        """The device's compute ends in simulated time: its local update is decided (run later,
        by `run_jobs`, with whatever else is pending)."""
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
        self.run_jobs()
        return self.guard.screen(round_index, devices)

    def on_aggregate(self, round_index: int, devices: list[int], weights: list[float] | None = None) -> None:
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
        if event.kind in ("dropped", "stale") and event.device is not None:
            if event.device in self.jobs:  # it still trains (its private state keeps that), unmerged
                self.discarded.add(event.device)
            self.updates.pop(event.device, None)
            self.bases.pop(event.device, None)
            self.guard.forget(event.device)
            if event.kind == "dropped":  # dropped before its compute ended: its payload is never trained on
                self.pending.pop(event.device, None)

    def on_round_end(self, round_index: int, sim_time_s: float) -> None:
        self.run_jobs()
        rounds = self.scenario.world.server.rounds
        done = round_index + 1
        if done % self.scenario.training.eval_every == 0 or done == rounds:
            self.log(done, sim_time_s, evaluate_all(self.method, self.n_clients, self.scenario.executor.batch_devices))
        ModelSaver(self.scenario.output.save_models, self.run.path).on_round_end(self.method, self.seed, self.n_clients, done)
        if self.checkpoint is not None:
            self.checkpoint.save(round_index, self.method, self.export(), self.tally)
            self.trained.clear()

    def log(self, round_done: int, sim_time_s: float, evaluation: Evaluation) -> None:
        t = self.tally
        row = self.run.log_evaluation(
            self.method.name, self.seed, round_done, sim_time_s, t.bytes_up, t.bytes_down, t.energy_j,
            per_device=evaluation.per_device,
        )
        heard = Evaluated(sim_time_s, round_done, row["ppl"], row["acc"], t.bytes_up, t.bytes_down, t.energy_j)
        for hear in self.observers:
            hear(heard)
        if self.scenario.training.save_routing:  # opt-in analysis: per-layer routing weights
            from simfed.learn.routing import ROUTING_FILE, record_routing
            record_routing(self.run.path / ROUTING_FILE, self.method, self.seed, round_done, self.n_clients)
