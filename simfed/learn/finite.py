"""Finiteness of a local update, and putting a diverged device back to what it downloaded.

A server must never merge a non-finite upload: one NaN in a weighted mean makes every device's
model NaN from the next round on. The run side (simfed/run/divergence.py) asks `is_finite` of
every update before the server merges it, and on a refusal calls `reset_to_download`, so the
device goes on from the payload it received (its private state as it was before the round)
instead of from the diverged weights.
"""
from __future__ import annotations

import math

import torch

from simfed.learn.adapters import copy_into
from simfed.learn.methods.base import Method, Update


def is_finite(update: Update) -> bool:
    """Every uploaded tensor and the training loss are finite."""
    if not math.isfinite(update.train_loss):
        return False
    return all(bool(torch.isfinite(t).all()) for t in update.upload.values())


def reset_to_download(method: Method, client: int, before: tuple[dict, dict] | None,
                      received: dict[str, torch.Tensor]) -> None:
    """The client's state as it was before its diverged update (`before`: `export_client`'s value
    taken then; optimizer moments included), with the payload it downloaded written over its
    shared tensors. A method whose local tensors are laid out differently from its payload
    (HetLoRA: zero-padded to the device's initial rank) says how with `as_local_payload`."""
    from simfed.learn.methods.adapter_method import AdapterMethod

    method.import_client(client, before)
    if not isinstance(method, AdapterMethod) or not received:
        return
    fed = method.fed
    payload = method.as_local_payload(client, received)
    state = fed.store.get_or_create(client)
    copy_into(state.adapters, payload)
    fed.store.release(client)
