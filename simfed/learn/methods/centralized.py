"""Centralized: ONE model and ONE optimizer on the pooled training data — an upper bound that ignores privacy.

As the paper runs it (its reference script: one client holding all users' data, batch 256 = the
4 users' batches of 64 pooled): every step draws batch_size × N sequences uniformly from the
concatenation of all N devices' training splits, and one AdamW steps one set of adapters (by
`match`: the paper's two averaged MLP LoRA experts, or one LoRA). The server trains it: at the
end of each round with at least one reporting device, `local_steps` pooled steps, with the lr
schedule over the run's rounds as for every method. The devices do nothing: no bytes move and
their rounds cost no FLOPs, so Centralized's time, byte and energy axes measure only the round
structure — it is a bound on perplexity, not a systems contender. Every device's test split is
measured on the one model.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from simfed.learn.adapters import AdaptedModel
from simfed.learn.evaluate import evaluate_windows
from simfed.learn.local_update import ClientState, batch_rng, new_client_state, train_locally
from simfed.learn.matching import describe_lora, device_shape
from simfed.learn.methods.base import (
    Checkpointable, ClientInfo, EvalResult, LocalPlan, Method, NoDeviceCosts, Replicable, Split, Update,
)
from simfed.learn.methods.common import recipe_for
from simfed.learn.methods.federation import SERVER_KEY, AdapterFederation, torch_generator
from simfed.learn.spec import CentralizedSpec, TrainingSpec
from simfed.learn.store import pack_client_state, unpack_client_state

CENTRAL = "central"  # checkpoint prefix of the one model's state


def pooled_split(clients: list[ClientInfo], split: str) -> np.ndarray:
    """Every device's `split` tokens, concatenated in device order (read-only)."""
    tokens = np.concatenate([getattr(c.data, split) for c in sorted(clients, key=lambda c: c.client_id)])
    tokens.setflags(write=False)
    return tokens


class Centralized(Method, NoDeviceCosts, Checkpointable, Replicable):
    """Not an `AdapterMethod`: no device holds adapters of its own (routing records, memory need
    and exports see none); the one model lives here."""

    spec_type = CentralizedSpec
    measured_model = "the single model trained on the pooled data by one optimizer (the server's)"

    def __init__(self, spec: CentralizedSpec, training: TrainingSpec, model: AdaptedModel) -> None:
        self.name = spec.name
        self.spec = spec
        self.shape = device_shape(spec, 0.0, 0.0)
        # evaluation windows and the base model (not named `fed`: no device holds adapters of its own)
        self.pool = AdapterFederation(model, recipe_for(spec, training), lambda name: False, training.eval_windows)
        self.recipe = self.pool.recipe
        self.state: ClientState | None = None
        self.train = self.val = np.zeros(0, dtype=np.int32)
        self.total_rounds = 0  # the run's rounds (for the lr schedule), from the devices' plans

    def setup(self, clients: list[ClientInfo], seed: int) -> None:
        self.pool.setup(clients, {}, self.shape, seed)
        self.train, self.val = pooled_split(clients, "train"), pooled_split(clients, "val")
        # one pooled batch a step: every device's batch_size sequences (the paper: 4 × 64 = 256)
        self.recipe = dataclasses.replace(self.pool.recipe, batch_size=self.pool.recipe.batch_size * len(clients))
        self.state = self._fresh()

    def _fresh(self) -> ClientState:
        adapters = self.pool.model.new_adapters(self.shape, torch_generator(self.pool.seed, SERVER_KEY))
        return new_client_state(adapters, self.recipe)

    def download(self, client: int) -> dict[str, torch.Tensor]:
        return {}

    def local_update(self, client: int, received: dict[str, torch.Tensor], plan: LocalPlan) -> Update:
        """A device trains nothing (its data is in the pool); it only reports the run's length."""
        self.total_rounds = max(self.total_rounds, plan.total_rounds)
        return Update(client=client, upload={}, n_tokens=0, train_loss=float("nan"))

    def aggregate(self, updates: list[Update], round_index: int) -> None:
        """The round's `local_steps` steps of the one optimizer on pooled batches."""
        if not updates:
            return
        steps = self.recipe.local_steps
        total = max(self.total_rounds, round_index + 1) * steps

        def progress_at(step: int) -> float:
            return (round_index * steps + step) / total

        train_locally(self.pool.model, self.state, self.train, self.val, self.recipe, progress_at,
                      batch_rng(self.pool.seed, SERVER_KEY, round_index, 0))

    def evaluate(self, client: int, split: Split = "test") -> EvalResult:
        return evaluate_windows(self.pool.model, self.state.adapters, self.pool.windows(client, split), self.pool.eval_batch)

    def describe_client(self, client: int) -> str:
        return describe_lora(self.shape) + ", pooled (one model)"

    # --- remote execution: a replica's device only reports the run's length ----------------------
    def export_client(self, client: int) -> tuple[dict, dict] | None:
        return None  # devices hold no state

    def import_client(self, client: int, packed: tuple[dict, dict] | None) -> None:
        """Nothing to take: devices hold no state."""

    def remote_outcome(self, client: int) -> dict:
        return {"total_rounds": self.total_rounds}

    def absorb_remote_outcome(self, client: int, outcome: dict) -> None:
        self.total_rounds = max(self.total_rounds, int(outcome["total_rounds"]))

    # --- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        tensors, meta = pack_client_state(self.state)
        return {"tensors": {f"{CENTRAL}.{k}": v for k, v in tensors.items()}, "clients": {},
                "meta": {CENTRAL: meta, "total_rounds": self.total_rounds}}

    def load_state_dict(self, state: dict) -> None:
        prefix = CENTRAL + "."
        tensors = {k[len(prefix):]: v for k, v in state["tensors"].items() if k.startswith(prefix)}
        self.state = unpack_client_state(self._fresh(), tensors, state["meta"][CENTRAL])
        self.total_rounds = int(state["meta"]["total_rounds"])
