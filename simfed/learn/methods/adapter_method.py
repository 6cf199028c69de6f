"""`AdapterMethod`: the one base that methods built on an `AdapterFederation` share.

Most methods are "some LoRA adapters per device, some of them shared through the server": they
differ in which tensors are shared, how a device's shape follows from its budget and how the
server merges. Everything else — download the server's shared tensors, train and upload them,
evaluate the local model, answer the cost questions from the adapter shape, checkpoint and
replicate the federation's state — is the same delegation to `self.fed`, written here once.
A method overrides what it does differently (HetLoRA truncates, FFA-LoRA never sends A, ...).
"""
from __future__ import annotations

from typing import Callable

import torch

from simfed.learn.adapters import AdaptedModel
from simfed.learn.aggregate import buffered_merge, deltas
from simfed.learn.local_update import Recipe
from simfed.learn.matching import describe_lora, device_shape
from simfed.learn.memory import DTYPE_BYTES, memory_need
from simfed.learn.merge_flops import mean_flops
from simfed.learn.methods.base import (
    Batchable, Checkpointable, ClientInfo, Costs, EvalResult, LocalPlan, Method, PendingUpdate, Replicable, Split,
    Update, run_pending,
)
from simfed.learn.methods.common import recipe_for
from simfed.learn.methods.federation import AdapterFederation
from simfed.learn.spec import MethodSpec, TrainingSpec


class AdapterMethod(Method, Costs, Checkpointable, Replicable, Batchable):
    """A method over one `AdapterFederation` (`self.fed`); `shared(name)` picks the tensors the
    server holds. Subclasses override what differs below (the shapes in `setup`, the merge, ...)."""

    def __init__(self, spec: MethodSpec, training: TrainingSpec, model: AdaptedModel,
                 shared: Callable[[str], bool], recipe: Recipe | None = None) -> None:
        self.name = spec.name
        self.spec = spec
        self.fed = AdapterFederation(model, recipe or recipe_for(spec, training), shared, training.eval_windows)

    # --- learning verbs ------------------------------------------------------------------------
    def setup(self, clients: list[ClientInfo], seed: int) -> None:
        """The default structure: the one sizing rule's shape for the kind (simfed/learn/matching.py,
        the same on every device when it does not depend on the budget) on every device and the
        server. Methods that size devices by their budget override it."""
        shape = device_shape(self.spec, 0.0, 0.0)
        self.fed.setup(clients, {c.client_id: shape for c in clients}, shape, seed)

    def download(self, client: int) -> dict[str, torch.Tensor]:
        return self.fed.download(client)

    def describe_client(self, client: int) -> str:
        """'LoRA r8', or '2×LoRA r8 avg' for the parameter-matched pair; mixtures override it."""
        return describe_lora(self.fed.shapes[client])

    def local_update(self, client: int, received: dict[str, torch.Tensor], plan: LocalPlan) -> Update:
        """`begin_update` trained alone and finished: the batched path with one device."""
        return run_pending([self.begin_update(client, received, plan)])[0]

    def begin_update(self, client: int, received: dict[str, torch.Tensor], plan: LocalPlan) -> PendingUpdate:
        """The federation's update (copy in, train, upload the shared tensors); a method that does
        more before or after the training overrides this, never `local_update`."""
        return self.fed.begin_update(client, received, plan)

    def aggregate(self, updates: list[Update], round_index: int) -> None:
        """Each shared tensor ← the mean over the updates that carry it (`aggregation_weights`)."""
        if updates:
            self.fed.mean_into_server(updates, self.fed.client_weights(updates, self.spec.aggregation_weights))

    def evaluate(self, client: int, split: Split = "test") -> EvalResult:
        return self.fed.evaluate(client, split)

    def evaluate_batch(self, clients: list[int], split: Split = "test") -> list[EvalResult]:
        return self.fed.evaluate_many(clients, split)

    # --- Costs ---------------------------------------------------------------------------------
    def upload_shapes(self, client: int) -> dict[str, tuple[int, ...]]:
        return self.fed.shapes_of(client, self.fed.shared_names(client))

    def download_shapes(self, client: int) -> dict[str, tuple[int, ...]]:
        return self.upload_shapes(client)

    def round_flops(self, client: int) -> float:
        return self.fed.round_flops(client)

    def round_activation_bytes(self, client: int) -> float:
        return self.fed.round_activation_bytes(client)

    def aggregation_flops(self, clients: list[int]) -> float:
        """A weighted mean of the server's shared tensors over the merged updates (HetLoRA's
        zero-padded ranks included: each update is padded to the server's shape, then averaged)."""
        return mean_flops(len(clients), sum(t.numel() for t in self.fed.server.values()))

    def memory_need(self, client: int) -> int | None:
        """Bytes to train the client's adapter shape: the frozen base as the card stores it,
        activations in the autocast dtype (2 bytes) or the card's."""
        fed = self.fed
        shape = fed.shapes.get(client)
        if shape is None:
            return None
        weight = DTYPE_BYTES[fed.model.base.card.dtype]
        activation = 2 if fed.model.autocast is not None else weight
        return memory_need(fed.dims, shape, fed.recipe.batch_size, fed.recipe.seq_len, weight, activation).total

    # --- Checkpointable ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The federation's state; a method with more (ranks, relayed models, flags) extends both."""
        return self.fed.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.fed.load_state_dict(state)

    def as_local_payload(self, client: int, received: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`received` laid out as the client's own tensors (a diverged update is undone by writing it
        over them, simfed/learn/finite.py); a method whose payload differs (HetLoRA) overrides it."""
        return received

    # --- Replicable ----------------------------------------------------------------------------
    def export_client(self, client: int) -> tuple[dict, dict] | None:
        return self.fed.export_client(client)

    def import_client(self, client: int, packed: tuple[dict, dict] | None) -> None:
        self.fed.import_client(client, packed)

    # --- shared by the methods that merge FedBuff/FedAsync deltas as a mean --------------------
    def buffered_mean(self, updates: list[Update], bases: list[dict[str, torch.Tensor]], weights: list[float]) -> None:
        """The shared tensors move by the buffered deltas, weighted by aggregation_weights × staleness."""
        if updates:
            own = self.fed.client_weights(updates, self.spec.aggregation_weights)
            changes = deltas([u.upload for u in updates], bases)
            self.fed.server = buffered_merge(self.fed.server, changes, [a * s for a, s in zip(own, weights)],
                                             self.spec.server_lr)
