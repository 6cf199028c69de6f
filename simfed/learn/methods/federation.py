"""What every adapter-based method shares, as a part to compose (not a base class to inherit).

`AdapterFederation` keeps, over ONE adapted base model: each client's adapter shape, the lazily
created client states, the server's copy of the shared tensors, and the client's deterministic
data windows. A method decides which tensors are shared (`shared(name)`), how a client's shape
follows from its budget, and how the server merges; the federation does the rest the same way
for all of them: download = server tensors, local update = copy in + train + upload the shared
tensors, evaluation = the client's local model on fixed windows.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from simfed.learn.adapters import AdaptedModel, AdapterShape, DeviceAdapters, copy_into
from simfed.learn.aggregate import mean_of_carriers
from simfed.learn.evaluate import evaluate_many, evaluate_windows, evaluation_windows
from simfed.learn.flops import ModelDims, recipe_round_activation_bytes, recipe_round_flops
from simfed.learn.local_update import ClientState, LocalWork, Recipe, batch_rng, new_client_state
from simfed.learn.methods.base import ClientInfo, EvalResult, LocalPlan, PendingUpdate, Split, Update, run_pending
from simfed.learn.store import ClientStore, pack_client_state, pack_states, unpack_client_state, unpack_states


def torch_generator(seed: int, *keys: int) -> torch.Generator:
    """A torch Generator seeded from (seed, *keys) through numpy's SeedSequence (no global seeding)."""
    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


SERVER_KEY = 1 << 30  # generator key of the server's initialisation (never a client id)


class AdapterFederation:
    """Clients' adapters, the server's shared tensors, and the verbs built on them."""

    def __init__(
        self,
        model: AdaptedModel,
        recipe: Recipe,
        shared: Callable[[str], bool],
        eval_windows: int,
        eval_batch: int = 8,
    ) -> None:
        self.model = model
        self.recipe = recipe
        self.shared = shared
        self.eval_windows = eval_windows
        self.eval_batch = eval_batch
        self.dims = ModelDims.of(model)
        self.clients: dict[int, ClientInfo] = {}
        self.shapes: dict[int, AdapterShape] = {}
        self.server: dict[str, torch.Tensor] = {}
        self.seed = 0
        self.store = ClientStore(self._fresh_state)
        self._windows: dict[tuple[int, str], np.ndarray] = {}
        self._names_by_shape: dict[AdapterShape, list[str]] = {}
        # what a never-trained client's adapters hold of the server (HetLoRA pads it to its rank)
        self.fresh_payload: Callable[[int], dict[str, torch.Tensor]] = self.download

    # --- setup -----------------------------------------------------------------------------
    def setup(self, clients: list[ClientInfo], shapes: dict[int, AdapterShape], server_shape: AdapterShape, seed: int) -> None:
        """Register clients and draw the server's initial shared tensors (one init for all)."""
        self.clients = {c.client_id: c for c in clients}
        self.shapes = dict(shapes)
        self.seed = seed
        server = self.model.new_adapters(server_shape, torch_generator(seed, SERVER_KEY))
        self.server = {k: v.clone() for k, v in server.views().items() if self.shared(k)}

    def _fresh_state(self, client: int) -> ClientState:
        adapters = self.model.new_adapters(self.shapes[client], torch_generator(self.seed, client))
        return new_client_state(adapters, self.recipe)

    # --- names and shapes ------------------------------------------------------------------
    def shared_names(self, client: int) -> list[str]:
        """The client's tensors that the server holds (its download and its upload)."""
        return [name for name in self._names(client) if name in self.server]

    def _names(self, client: int) -> list[str]:
        shape = self.shapes[client]
        if shape not in self._names_by_shape:  # names depend on the shape alone
            probe = self.model.new_adapters(shape, torch.Generator().manual_seed(0))
            self._names_by_shape[shape] = list(probe.views())
        return self._names_by_shape[shape]

    def shapes_of(self, client: int, names: list[str]) -> dict[str, tuple[int, ...]]:
        return {n: tuple(self.server[n].shape) for n in names}

    # --- verbs -------------------------------------------------------------------------------
    def download(self, client: int) -> dict[str, torch.Tensor]:
        return {n: self.server[n].clone() for n in self.shared_names(client)}

    def local_update(
        self,
        client: int,
        received: dict[str, torch.Tensor],
        plan: LocalPlan,
        regulariser: Callable[[DeviceAdapters], torch.Tensor] | None = None,
        after_step: Callable[[DeviceAdapters], None] | None = None,
    ) -> Update:
        """One device's update, trained alone: what plugins built on the federation call
        (examples/my_method); the batched executor uses `begin_update`."""
        return run_pending([self.begin_update(client, received, plan, regulariser, after_step)])[0]

    def begin_update(
        self,
        client: int,
        received: dict[str, torch.Tensor],
        plan: LocalPlan,
        regulariser: Callable[[DeviceAdapters], torch.Tensor] | None = None,
        after_step: Callable[[DeviceAdapters], None] | None = None,
    ) -> PendingUpdate:
        """Copy `received` in and describe the round's training (`LocalWork`); `finish` uploads the
        shared tensors and releases the state (simfed/learn/methods/base.py `Batchable`)."""
        state = self.store.get_or_create(client)
        copy_into(state.adapters, received)
        info = self.clients[client]
        steps = self.recipe.local_steps

        def progress_at(step: int) -> float:
            return (plan.round_index * steps + step) / max(plan.total_rounds * steps, 1)

        work = LocalWork(state, info.data.train, info.data.val, self.recipe, progress_at,
                         batch_rng(plan.seed, client, plan.round_index, 0), regulariser, after_step)

        def finish() -> Update:
            assert work.result is not None, "finish() before the work was trained"
            loss, n_tokens = work.result
            views = state.adapters.views()
            upload = {n: views[n].detach().clone() for n in self.shared_names(client)}
            self.store.release(client)
            return Update(client=client, upload=upload, n_tokens=n_tokens, train_loss=loss)

        return PendingUpdate(self.model, work, finish)

    def mean_into_server(self, updates: list[Update], weights: list[float]) -> None:
        """Server tensor ← weighted mean over the updates that carry it (others keep their value)."""
        self.server.update(mean_of_carriers(self.server, [u.upload for u in updates], weights))  # simfed/learn/aggregate.py

    def train_size(self, client: int) -> int:
        """Tokens in the client's training split: its n_i in data-size weighting (FlexLoRA, and
        `aggregation_weights: tokens`). Not `Update.n_tokens`, the tokens of one round, which is
        local_steps × batch × seq_len for every device whatever its data."""
        return int(len(self.clients[client].data.train))

    def client_weights(self, updates: list[Update], mode: str) -> list[float]:
        """Per update: 1 (uniform) or, for `tokens`, the size n_i of its device's training split."""
        return [float(self.train_size(u.client)) if mode == "tokens" else 1.0 for u in updates]

    def local_adapters(self, client: int) -> DeviceAdapters:
        """The model the client has now: its own state, or — never trained — the server's tensors
        over fresh private adapters."""
        state = self.store.peek(client)
        if state is not None:
            return state.adapters
        adapters = self.model.new_adapters(self.shapes[client], torch_generator(self.seed, client))
        copy_into(adapters, self.fresh_payload(client))
        return adapters

    def windows(self, client: int, split: Split) -> np.ndarray:
        key = (client, split)
        if key not in self._windows:
            tokens = getattr(self.clients[client].data, split)
            self._windows[key] = evaluation_windows(tokens, self.recipe.seq_len, self.eval_windows)
        return self._windows[key]

    def evaluate(self, client: int, split: Split) -> EvalResult:
        return evaluate_windows(self.model, self.local_adapters(client), self.windows(client, split), self.eval_batch)

    def evaluate_many(self, clients: list[int], split: Split) -> list[EvalResult]:
        """`evaluate` of several clients, their forwards batched (simfed/learn/evaluate.py)."""
        devices = [(self.local_adapters(c), self.windows(c, split)) for c in clients]
        return evaluate_many(self.model, devices, self.eval_batch)

    def state_dict(self) -> dict:
        """The server's shared tensors and every client's state (see `Method.state_dict`)."""
        tensors: dict[str, torch.Tensor] = {}
        meta: dict = {}
        pack_states("server", {0: self.server}, tensors, meta)
        return {"tensors": tensors, "clients": self.store.snapshot(), "meta": meta}

    def load_state_dict(self, state: dict) -> None:
        self.server = unpack_states("server", state["tensors"], state["meta"])[0]
        self.store.restore(state["clients"])

    def export_client(self, client: int) -> tuple[dict, dict] | None:
        state = self.store.peek(client)
        if state is None:
            return None
        packed = pack_client_state(state)
        self.store.release(client)
        return packed

    def import_client(self, client: int, packed: tuple[dict, dict] | None) -> None:
        if packed is None:
            self.store.forget(client)
            return
        self.store.put(client, unpack_client_state(self.store.fresh(client), *packed))

    def _step(self, client: int) -> int:
        state = self.store.peek(client)
        return state.global_step if state is not None else 0

    def round_flops(self, client: int) -> float:
        return recipe_round_flops(self.dims, self.shapes[client], self.recipe, self._step(client))

    def round_activation_bytes(self, client: int) -> float:
        return recipe_round_activation_bytes(self.dims, self.shapes[client], self.recipe, self._step(client))
