"""Where local updates run: in this process (`local`) or on Ray workers (`ray`).

Simulated time comes from the cost model, never from the training, so the runner can hold a
round's local updates back and hand them over together (`Job`s) just before their results are
needed — at an aggregation, an evaluation, a checkpoint, or when the same device is asked about
again. Each job is a pure function of the client's state, the payload it received, the plan and a
little method state (`Method.remote_context`), so running them one after the other here or side
by side on replicas gives the same bits (same torch build, same thread count per process).

The Ray executor keeps `workers` actors for a whole run; each loads the base model once on its
CPU or GPU and, per method and seed, builds a replica of the method exactly as the driver did
(`setup` with the same clients and seed). A job carries the client's packed state to a worker and
comes back with the update and the new state, through Ray's object store.

`batch_devices: K` (both executors) trains up to K held-back updates as ONE batch on the shared
frozen base (simfed/learn/local_update.py `train_devices`): the same updates and states as one by
one, to float rounding (batching changes matmul shapes; tests: 1e-5 relative in fp32).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import torch

from simfed.errors import SimfedError
from simfed.learn.methods.base import ClientInfo, LocalPlan, Method, Replicable, Update, update_in_batches


class ExecutorError(SimfedError):
    """The executor asked for cannot run here (Ray missing, a method without replica support)."""


@dataclass(frozen=True)
class Job:
    """One device's local update, as the engine decided it: start from `received`, follow `plan`."""

    client: int
    received: dict[str, torch.Tensor]
    plan: LocalPlan


class Executor(Protocol):
    def bind(self, method: Method, method_index: int, clients: list[ClientInfo], seed: int) -> None:
        """The method (already `setup` on `clients` with `seed`) whose updates `run` will compute."""

    def run(self, jobs: Sequence[Job]) -> list[Update]:
        """The updates of `jobs`, in their order; client states end as if run one by one here."""

    def close(self) -> None: ...


class LocalExecutor:
    """In process, one job after the other (or `batch_devices` at a time in one batch): the
    reference every other executor must equal."""

    def __init__(self, batch_devices: int = 1) -> None:
        self.method: Method | None = None
        self.batch_devices = batch_devices

    def bind(self, method: Method, method_index: int, clients: list[ClientInfo], seed: int) -> None:
        self.method = method

    def run(self, jobs: Sequence[Job]) -> list[Update]:
        assert self.method is not None
        return update_in_batches(self.method, [(j.client, j.received, j.plan) for j in jobs], self.batch_devices)

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- Ray

@dataclass(frozen=True)
class RemoteJob:
    job: Job
    state: tuple[dict, dict] | None  # the client's packed state (None: it never trained)
    context: dict  # Method.remote_context


@dataclass(frozen=True)
class RemoteResult:
    update: Update
    state: tuple[dict, dict] | None
    outcome: dict  # Method.remote_outcome


class Replica:
    """A worker's side: one base model for the worker's life, one method replica at a time."""

    def __init__(self, card: Any, device: str, threads: int, training: Any, batch_devices: int = 1) -> None:
        from simfed.learn.device import load_adapted_model
        from simfed.run.host_memory import keep_freed_memory

        if threads:
            torch.set_num_threads(threads)
        keep_freed_memory()  # as the driver's process does (simfed/run/host_memory.py)
        self.training = training
        self.batch_devices = batch_devices
        self.model = load_adapted_model(card, training, device)
        self.method: Method | None = None
        self.key: tuple | None = None  # (method index, seed) of the replica built

    def prepare(self, key: tuple, spec: Any, clients: list[ClientInfo], seed: int) -> None:
        """Build the method of `spec` and set it up as the driver did."""
        from simfed.learn.methods.registry import build_method

        self.method = build_method(spec, self.training, self.model)
        self.method.setup(clients, seed)
        self.key = key

    def run(self, jobs: list[RemoteJob]) -> list[RemoteResult]:
        assert self.method is not None
        method = self.method
        step = max(self.batch_devices, 1)
        out = []
        for start in range(0, len(jobs), step):
            group = jobs[start : start + step]
            for rj in group:
                method.import_client(rj.job.client, rj.state)
                method.apply_remote_context(rj.job.client, rj.context)
            updates = update_in_batches(method, [(rj.job.client, rj.job.received, rj.job.plan) for rj in group], step)
            for rj, update in zip(group, updates):
                c = rj.job.client
                out.append(RemoteResult(update, method.export_client(c), method.remote_outcome(c)))
                method.import_client(c, None)  # the driver owns the state; keep the worker lean
        return out


class RayExecutor:
    """Local updates on `workers` Ray actors; jobs are dealt round-robin in their order."""

    def __init__(self, card: Any, training: Any, workers: int, threads: int, device: str,
                 gpus_per_worker: float = 0.0, address: str | None = None, batch_devices: int = 1) -> None:
        try:
            import ray
        except ImportError as exc:  # the optional extra
            raise ExecutorError("executor 'ray' needs Ray: pip install 'simfed[ray]'") from exc
        self.ray = ray
        if not ray.is_initialized():
            # workers inherit this process's environment (offline flags, SIMFED_CACHE)
            ray.init(address=address, num_cpus=None if address else max(workers, 1), include_dashboard=False,
                     log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": {k: v for k, v in os.environ.items()
                                               if k.startswith(("SIMFED_", "HF_", "TRANSFORMERS_"))}})
            self._started_ray = True
        else:
            self._started_ray = False
        actor = ray.remote(num_cpus=1, num_gpus=gpus_per_worker)(Replica)
        self.actors = [actor.remote(card, device, threads, training, batch_devices) for _ in range(workers)]
        self.method: Method | None = None

    def bind(self, method: Method, method_index: int, clients: list[ClientInfo], seed: int) -> None:
        if not isinstance(method, Replicable):
            raise ExecutorError(f"method {method.name!r} cannot run on the 'ray' executor: its class is not "
                                "Replicable (simfed/learn/methods/base.py); use executor: local")
        spec = method.spec
        self.method = method
        clients_ref = self.ray.put(clients)
        for actor in self.actors:  # an actor runs its calls in order: every later `run` finds the replica built
            actor.prepare.remote((method_index, seed), spec, clients_ref, seed)

    def run(self, jobs: Sequence[Job]) -> list[Update]:
        assert self.method is not None
        if len({j.client for j in jobs}) != len(jobs):  # states are exported up front: one job per device
            raise ValueError("RayExecutor.run: a device appears twice in one batch")
        if not jobs:
            return []
        ray, method = self.ray, self.method
        shares: list[list[tuple[int, RemoteJob]]] = [[] for _ in self.actors]
        for i, job in enumerate(jobs):
            rj = RemoteJob(job, method.export_client(job.client), method.remote_context(job.client))
            shares[i % len(self.actors)].append((i, rj))
        futures = []
        for actor, share in zip(self.actors, shares):
            if share:
                futures.append((share, actor.run.remote([rj for _, rj in share])))
        updates: list[Update | None] = [None] * len(jobs)
        for share, future in futures:
            for (i, rj), result in zip(share, ray.get(future)):
                c = rj.job.client
                method.import_client(c, result.state)
                method.absorb_remote_outcome(c, result.outcome)
                updates[i] = result.update
        return updates  # type: ignore[return-value]

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []
        if self._started_ray:
            self.ray.shutdown()


def make_executor(spec: Any, card: Any, training: Any) -> Executor:
    """The executor a scenario's `executor:` section asks for."""
    if spec.kind == "local":
        return LocalExecutor(spec.batch_devices)
    threads = spec.threads_per_worker or training.threads
    gpus = 0.0
    if torch.cuda.is_available() and training.device != "cpu":  # the actors share this host's GPUs
        gpus = spec.gpus_per_worker or min(1.0, torch.cuda.device_count() / spec.workers)
    return RayExecutor(card, training, spec.workers, threads, training.device, gpus, spec.address, spec.batch_devices)
