"""Per-device state: only adapters, router and optimizer state — the base model is shared.

A device that never trained holds nothing. States live in memory, or — when a spill directory
is given — in one safetensors file per device between uses (weights, AdamW moments and step
counters as tensors, the rest as JSON metadata), so thousands of registered devices cost disk,
not RAM.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file

from simfed.learn.local_update import ClientState


def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    sd = opt.state_dict()
    for idx, slots in sd["state"].items():
        for key, value in slots.items():
            tensors[f"{prefix}.{idx}.{key}"] = torch.as_tensor(value).clone()
    meta[prefix] = json.dumps(sd["param_groups"])


def _restore_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            _, idx, key = name.rsplit(".", 2)
            state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": json.loads(meta[prefix])})


def pack_client_state(state: ClientState) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A client's state as flat tensors (adapters, AdamW moments and steps) plus string metadata:
    the form it takes on disk (safetensors) and on the way to and from a remote worker."""
    tensors = {f"adapters.{k}": v.detach().clone() for k, v in state.adapters.state_dict().items()}
    meta = {"global_step": str(state.global_step), "extra": json.dumps(state.extra)}
    _flatten_optimizer("expert_opt", state.expert_opt, tensors, meta)
    if state.router_opt is not None:
        _flatten_optimizer("router_opt", state.router_opt, tensors, meta)
    return {k: v.contiguous() for k, v in tensors.items()}, meta


def unpack_client_state(fresh: ClientState, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> ClientState:
    """Fill a freshly built state of the right shape from `pack_client_state`'s value."""
    adapters_sd = {k[len("adapters.") :]: v for k, v in tensors.items() if k.startswith("adapters.")}
    fresh.adapters.load_state_dict(adapters_sd)
    _restore_optimizer("expert_opt", fresh.expert_opt, tensors, meta)
    if fresh.router_opt is not None:
        _restore_optimizer("router_opt", fresh.router_opt, tensors, meta)
    fresh.global_step = int(meta["global_step"])
    fresh.extra = json.loads(meta["extra"])
    return fresh


def save_client_state(state: ClientState, path: Path) -> None:
    tensors, meta = pack_client_state(state)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)


def load_client_state(fresh: ClientState, path: Path) -> ClientState:
    """Fill a freshly built state of the right shape from `path`."""
    from safetensors import safe_open

    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    return unpack_client_state(fresh, tensors, meta)


def state_bytes(state: ClientState) -> int:
    """Bytes a client's state holds in memory: adapters plus both optimizers' moments."""
    total = sum(p.numel() * p.element_size() for p in state.adapters.parameters())
    for opt in (state.expert_opt, state.router_opt):
        if opt is not None:
            total += sum(v.numel() * v.element_size() for slots in opt.state.values()
                         for v in slots.values() if isinstance(v, torch.Tensor))
    return total


class ClientStore:
    """Client id → `ClientState`, created lazily by `make` the first time a client needs one.

    Without a spill directory every state stays in memory. With one, a released state goes to
    disk at once, or — with `memory_budget_bytes` — only when the states in memory would exceed
    the budget, least recently used first (so the devices of a round stay in memory across it
    while a fleet of thousands costs disk, not RAM)."""

    def __init__(self, make: Callable[[int], ClientState], spill_dir: Path | None = None,
                 memory_budget_bytes: int | None = None) -> None:
        self._make = make
        self._spill_dir = spill_dir
        self._budget = memory_budget_bytes
        self._memory: dict[int, ClientState] = {}  # in order of last use, oldest first
        self._on_disk: set[int] = set()
        self._sizes: dict[int, int] = {}  # state_bytes of states in memory, taken when each is released

    def limit(self, spill_dir: Path, memory_budget_bytes: int | None) -> None:
        """Spill to `spill_dir` beyond `memory_budget_bytes` of states in memory (None: always)."""
        self._spill_dir = Path(spill_dir)
        self._budget = memory_budget_bytes

    def __contains__(self, client: int) -> bool:
        return client in self._memory or client in self._on_disk

    def __len__(self) -> int:
        return len(self._memory) + len(self._on_disk)

    def _path(self, client: int) -> Path:
        assert self._spill_dir is not None
        return self._spill_dir / f"client-{client}.safetensors"

    def get_or_create(self, client: int) -> ClientState:
        """The client's state, loaded from disk if spilled, built fresh if it never existed."""
        if client in self._memory:
            state = self._memory.pop(client)  # most recently used: to the end
            self._memory[client] = state
            return state
        state = self._make(client)
        if client in self._on_disk:
            state = load_client_state(state, self._path(client))
        self._memory[client] = state
        return state

    def peek(self, client: int) -> ClientState | None:
        """The client's state if it has one, without creating it."""
        return self.get_or_create(client) if client in self else None

    def release(self, client: int) -> None:
        """Done with the client for now: with a spill directory its state leaves memory for disk
        (at once, or with a budget when the states in memory exceed it, oldest first)."""
        if self._spill_dir is None or client not in self._memory:
            return
        if self._budget is None:
            self._spill(client)
            return
        self._sizes[client] = state_bytes(self._memory[client])  # only the released state changed
        total = sum(self._sizes.get(c, 0) for c in self._memory)
        for oldest in list(self._memory):
            if total <= self._budget:
                break
            total -= self._sizes.get(oldest, 0)
            self._spill(oldest)

    def _spill(self, client: int) -> None:
        save_client_state(self._memory.pop(client), self._path(client))
        self._sizes.pop(client, None)
        self._on_disk.add(client)

    @property
    def in_memory(self) -> list[int]:
        """Clients whose state is in memory now, oldest use first."""
        return list(self._memory)

    def fresh(self, client: int) -> ClientState:
        """A newly built state for the client (not stored): the shape to unpack a saved one into."""
        return self._make(client)

    def put(self, client: int, state: ClientState) -> None:
        """Replace the client's state (a remote worker trained it), then release it as usual."""
        self._on_disk.discard(client)
        self._memory[client] = state
        self.release(client)

    def forget(self, client: int) -> None:
        """Drop the client's state from this store (a worker replica after returning it)."""
        self._memory.pop(client, None)
        self._sizes.pop(client, None)
        self._on_disk.discard(client)

    def snapshot(self) -> dict[int, ClientState | Path]:
        """Every client's state: in memory, or the path of its spilled file (for a checkpoint)."""
        out: dict[int, ClientState | Path] = {c: self._path(c) for c in sorted(self._on_disk - set(self._memory))}
        out.update(self._memory)
        return out

    def restore(self, files: dict[int, Path]) -> None:
        """Replace the store's contents by the client states saved in `files` (a checkpoint's)."""
        import shutil

        self._memory.clear()
        self._sizes.clear()
        self._on_disk.clear()
        for client, path in files.items():
            if self._spill_dir is not None:
                self._path(client).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, self._path(client))
                self._on_disk.add(client)
            else:
                self._memory[client] = load_client_state(self._make(client), path)


# ---------------------------------------------------------------- checkpoints (simfed run --resume)

def pack_states(prefix: str, states: dict, tensors: dict, meta: dict) -> None:
    """Put `{key: {name: tensor}}` into a flat `tensors` dict (`prefix.<i>.<name>`) and the keys and
    the names, in their order, into `meta[prefix]`; `unpack_states` inverts it exactly."""
    entries = []
    for i, (key, state) in enumerate(states.items()):
        entries.append([key, list(state)])
        for name, value in state.items():
            tensors[f"{prefix}.{i}.{name}"] = value.detach().clone().contiguous()
    meta[prefix] = entries


def unpack_states(prefix: str, tensors: dict, meta: dict) -> dict:
    out = {}
    for i, (key, names) in enumerate(meta.get(prefix, [])):
        out[key] = {name: tensors[f"{prefix}.{i}.{name}"] for name in names}
    return out

