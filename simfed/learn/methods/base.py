"""The seam between the learning and the run glue: `Method`, its protocols, and the typed values.

A method is plain torch code with five verbs (DESIGN.md): setup, download, local_update,
aggregate, evaluate. What else the run glue may ask of it is a protocol the class declares by
deriving from it: `Costs` (bytes, FLOPs and memory of a round before any training: every method
the runner drives has it), `ShapeCosts` (those costs from the shapes alone: dry mode), `Checkpointable`
(resume), `Replicable` (remote executors), `MergesAsync` (FedBuff/FedAsync) and `Batchable` (several
devices' local updates trained as one batch, `executor.batch_devices`). Methods over an `AdapterFederation` get all the delegating
defaults from `simfed.learn.methods.adapter_method.AdapterMethod`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Literal

import torch

from simfed.data.federated import UserData
from simfed.learn.adapters import AdaptedModel, AdapterShape
from simfed.learn.flops import ModelDims
from simfed.learn.local_update import LocalWork, train_devices
from simfed.learn.spec import MethodSpec


@dataclass(frozen=True)
class Budget:
    """A device's resources as the learning side sees them (drawn by the simulated fleet)."""

    memory_bytes: float
    flops_per_s: float


@dataclass(frozen=True)
class ClientInfo:
    client_id: int
    budget: Budget
    data: UserData


@dataclass(frozen=True)
class LocalPlan:
    """What one local round asks of a device."""

    round_index: int  # server round (0-based)
    total_rounds: int  # rounds of the whole run: the lr schedule spans them
    seed: int  # scenario seed: with client and round it fixes the batches drawn


@dataclass(frozen=True)
class Update:
    """What a device sends back after local training: the upload plus bookkeeping."""

    client: int
    upload: dict[str, torch.Tensor]
    n_tokens: int  # training tokens processed this round
    train_loss: float  # mean training cross-entropy of this round's expert steps
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalResult:
    ppl: float
    acc: float
    n_tokens: int
    ppl_se: float = float("nan")  # standard error of ppl over the evaluation windows (simfed/learn/evaluate.py)


Split = Literal["train", "val", "test"]


class Method(ABC):
    """A federated fine-tuning method over one shared frozen base model: the learning verbs.

    What a method can do beyond learning, it declares by also deriving from the protocols below
    (`Costs`, `Checkpointable`, `Replicable`, `MergesAsync`); the run glue asks `isinstance`,
    never `getattr`. `spec_type` is the pydantic class of its scenario section (simfed/learn/spec.py):
    the method is built as `cls(spec, training, model)`."""

    name: str
    spec: MethodSpec
    spec_type: ClassVar[type[MethodSpec]]
    measured_model: ClassVar[str] = (
        "each device's local model after its last local update, before aggregation "
        "(devices that never trained: the server model with fresh private adapters)"
    )

    @abstractmethod
    def setup(self, clients: list[ClientInfo], seed: int) -> None:
        """Allocate each client's adapter structure from its budget and the server's state."""

    @abstractmethod
    def download(self, client: int) -> dict[str, torch.Tensor]:
        """What the server sends `client` now (new tensors; the caller may keep them)."""

    @abstractmethod
    def local_update(self, client: int, received: dict[str, torch.Tensor], plan: LocalPlan) -> Update:
        """Real local training of `client` starting from `received`."""

    @abstractmethod
    def aggregate(self, updates: list[Update], round_index: int) -> None:
        """The server's merge of the updates it accepted this round."""

    @abstractmethod
    def evaluate(self, client: int, split: Split = "test") -> EvalResult:
        """Perplexity and next-token accuracy of `client`'s current local model on a split."""

    def describe_client(self, client: int) -> str:
        """A short human label of the client's structure, e.g. '1G+3S r8' or 'rank 16'."""
        return ""


class Costs(ABC):
    """The questions the simulated world must have answered *before* any training: bytes, FLOPs,
    memory traffic and memory of a device's next round. Answers come from shapes and the model's
    dimensions (`simfed.learn.flops`, `simfed.learn.memory`), never from running torch."""

    @abstractmethod
    def upload_shapes(self, client: int) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the tensors `client` would upload now (bytes before training)."""

    @abstractmethod
    def download_shapes(self, client: int) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the tensors the server would send `client` now."""

    @abstractmethod
    def round_flops(self, client: int) -> float:
        """FLOPs of `client`'s local work in one round (expert steps and router phases)."""

    def round_activation_bytes(self, client: int) -> float:
        """Element-wise memory traffic of `client`'s local round (`simfed.learn.flops`); 0 = none."""
        return 0.0

    def memory_need(self, client: int) -> int | None:
        """Bytes `client` needs to train (simfed/learn/memory.py); None: no per-device training
        state, taken as fitting (the engine's memory policy never excludes it)."""
        return None

    def aggregation_flops(self, clients: list[int]) -> float:
        """FLOPs of the server's merge of `clients`' updates (simfed/learn/merge_flops.py), from the
        shapes set up at the start, so that a replay and a dry run answer as the live run; 0 = a
        server with nothing to compute."""
        return 0.0


class NoDeviceCosts(Costs):
    """The costs of a method whose devices move no bytes and compute nothing (Pretrained; Centralized,
    whose one model the server trains): every answer is zero, written once here."""

    def upload_shapes(self, client: int) -> dict[str, tuple[int, ...]]:
        return {}

    def download_shapes(self, client: int) -> dict[str, tuple[int, ...]]:
        return {}

    def round_flops(self, client: int) -> float:
        return 0.0


class ShapeCosts(ABC):
    """A method whose payload follows from a device's adapter shape (`simfed.learn.matching.
    device_shape`) and the model's dimensions alone, with FLOPs and memory by the adapter rules
    (`simfed.learn.flops.recipe_round_flops`, `simfed.learn.memory.memory_need`). Dry mode
    (simfed/run/dry.py) answers the costs of exactly the kinds that declare it, without building
    the method; tests/run/test_dry.py holds every such kind's answers equal to the real method's."""

    @classmethod
    @abstractmethod
    def payload_numel(cls, spec: MethodSpec, dims: ModelDims, shape: AdapterShape) -> int:
        """Elements of the tensors a device of `shape` downloads, and uploads (the same count;
        HetLoRA: before any self-pruning, which dry mode cannot know)."""


class MergesAsync(ABC):
    """A method whose server can merge FedBuff/FedAsync's staleness-weighted buffered updates."""

    @abstractmethod
    def aggregate_async(
        self, updates: list[Update], bases: list[dict[str, torch.Tensor]], weights: list[float], round_index: int
    ) -> None:
        """`bases[i]` is the payload update i's device downloaded (its upload minus that is its delta),
        `weights[i]` its staleness weight 1/√(1+s); `round_index` is the model version merged."""


class Checkpointable(ABC):
    """A method that `simfed run --resume` can checkpoint at a round's end."""

    @abstractmethod
    def state_dict(self) -> dict:
        """What of the method changes as the run goes, at a round's end: {"tensors": {name: tensor},
        "clients": {client: ClientState or the path of its file}, "meta": JSON-able}. `setup` and
        then `load_state_dict` give a method that goes on exactly like the checkpointed one.
        Client states may only change in `local_update` (the checkpoint rewrites those of the
        devices that trained)."""

    @abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`'s value (its "clients" as {client: path of the saved state})."""


class Replicable(ABC):
    """A method whose local updates can run on a replica in a worker (simfed/run/executor.py).

    The worker holds a replica built and `setup` exactly like the driver's. One local update
    there must equal one here: the worker is sent the client's state and the little method state
    the update reads (`remote_context`), and gives back the new client state and what the update
    wrote of the method's own state (`remote_outcome`)."""

    @abstractmethod
    def export_client(self, client: int) -> tuple[dict, dict] | None:
        """The client's state as (tensors, metadata), or None if it has none yet."""

    @abstractmethod
    def import_client(self, client: int, packed: tuple[dict, dict] | None) -> None:
        """Make `export_client`'s value the client's state (None: the client has none)."""

    def remote_context(self, client: int) -> dict:
        """Method state, beyond the client's own, that `local_update(client, …)` reads."""
        return {}

    def apply_remote_context(self, client: int, context: dict) -> None:
        """On a replica: take `remote_context`'s value before running the update."""

    def remote_outcome(self, client: int) -> dict:
        """On a replica, after the update: method state it wrote (it is then cleared there)."""
        return {}

    def absorb_remote_outcome(self, client: int, outcome: dict) -> None:
        """On the driver: take `remote_outcome`'s value as if the update had run here."""


@dataclass
class PendingUpdate:
    """A local update split at its training: `work` is what `train_devices` runs (possibly in one
    batch with other devices' works), `finish()` — called once the work has its result — reads
    the trained state and returns the `Update`."""

    model: AdaptedModel
    work: LocalWork
    finish: Callable[[], Update]

    def then(self, after: Callable[[Update], Update]) -> "PendingUpdate":
        """The same work, with `after` applied to the update `finish` returns (a method's post-processing)."""
        inner = self.finish
        return PendingUpdate(self.model, self.work, lambda: after(inner()))


class Batchable(ABC):
    """A method whose local update has the seam prepare → train → finish (`begin_update`), so that
    an executor can prepare K devices' updates, train them in one batch, then finish each.

    `local_update(c, r, p)` must equal `begin_update(c, r, p)` trained alone and finished: the
    batched path is then the sequential one with K works in `train_devices`. Preparing one
    device's update must not read what finishing another's writes (all prepares run first)."""

    @abstractmethod
    def begin_update(self, client: int, received: dict[str, torch.Tensor], plan: LocalPlan) -> PendingUpdate:
        """Everything of `local_update` before the training, and the rest as `finish`."""

    @abstractmethod
    def evaluate_batch(self, clients: list[int], split: Split = "test") -> list[EvalResult]:
        """`evaluate` of several clients with their forwards batched (simfed/learn/evaluate.py
        `evaluate_many`): equal to one by one up to float rounding."""


def run_pending(pending: list[PendingUpdate]) -> list[Update]:
    """Train the pending updates as one batch (they share one model) and finish each, in order."""
    if pending:
        if len({id(p.model) for p in pending}) != 1:
            raise ValueError("pending updates trained in one batch must share one model")
        train_devices(pending[0].model, [p.work for p in pending])
    return [p.finish() for p in pending]


def _seam_below(method: Method, verb: str, seam: str) -> bool:
    """Whether `seam` is defined at or below the class that defines `verb` (a subclass that
    overrides `verb` alone would be bypassed by the batched path)."""
    mro = type(method).__mro__
    defines_verb = next(k for k in mro if verb in k.__dict__)
    defines_seam = next(k for k in mro if seam in k.__dict__)
    return issubclass(defines_seam, defines_verb)


def runs_batched(method: Method) -> bool:
    """Whether `method`'s updates may be trained in batches: it is `Batchable` and its
    `begin_update` is defined at or below the class that defines its `local_update` (a subclass
    that overrides `local_update` alone — a plugin, a test double — would be bypassed by the
    batched path, so it runs one by one)."""
    return isinstance(method, Batchable) and _seam_below(method, "local_update", "begin_update")


def evaluate_in_batches(method: Method, clients: list[int], split: Split, batch_devices: int) -> list[EvalResult]:
    """`method.evaluate` of `clients`, `batch_devices` at a time in one batch where the method
    allows it (as `runs_batched`, for `evaluate` and `evaluate_batch`), else one by one."""
    if batch_devices <= 1 or not (isinstance(method, Batchable) and _seam_below(method, "evaluate", "evaluate_batch")):
        return [method.evaluate(c, split) for c in clients]
    out: list[EvalResult] = []
    for start in range(0, len(clients), batch_devices):
        out.extend(method.evaluate_batch(clients[start : start + batch_devices], split))
    return out


def update_in_batches(method: Method, jobs: list[tuple[int, dict[str, torch.Tensor], LocalPlan]],
                      batch_devices: int) -> list[Update]:
    """The updates of (client, received, plan) jobs, in their order, trained `batch_devices` at a
    time when the method allows it (`runs_batched`), else one by one: the same updates and client
    states either way (to float rounding: batching changes the shapes of the frozen matmuls)."""
    if batch_devices <= 1 or not runs_batched(method):
        return [method.local_update(c, r, p) for c, r, p in jobs]
    assert isinstance(method, Batchable)
    out: list[Update] = []
    for start in range(0, len(jobs), batch_devices):
        group = jobs[start : start + batch_devices]
        if len({c for c, _, _ in group}) != len(group):
            raise ValueError("a device appears twice in one batch of local updates")
        out.extend(run_pending([method.begin_update(c, r, p) for c, r, p in group]))
    return out
