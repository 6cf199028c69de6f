"""Trainable parameters per device, counted from the real tensors a method gives each device.

Why from tensors and not from a formula: what trains is exactly what a device's optimizers step
(FFA-LoRA's frozen A is held but never trained; an averaged pair of experts has no router), so
the count that shows the matching is Σ numel over the optimizers' parameters of a freshly set-up
device. One fresh state is built per distinct adapter shape, so a fleet of thousands costs a few.
"""
from __future__ import annotations

from dataclasses import dataclass

from simfed.learn.local_update import optimised
from simfed.learn.methods.base import Method


@dataclass(frozen=True)
class ParamCount:
    trainable: int  # what the device's optimizers step (LoRA weights that train + routers)
    held: int  # every adapter tensor the device holds (frozen ones included)


def method_param_counts(method: Method, n_clients: int) -> dict[int, ParamCount]:
    """Device → its parameter counts at setup (before any pruning); {} for a method without adapters."""
    from simfed.learn.methods.adapter_method import AdapterMethod
    from simfed.learn.methods.centralized import Centralized

    if isinstance(method, Centralized):  # one model for everyone
        count = _count(method.state)
        return {c: count for c in range(n_clients)}
    if not isinstance(method, AdapterMethod) or not method.fed.shapes:
        return {}
    fed = method.fed
    by_shape: dict = {}
    out: dict[int, ParamCount] = {}
    for client in sorted(fed.shapes):
        shape = fed.shapes[client]
        if shape not in by_shape:
            by_shape[shape] = _count(fed.store.fresh(client))
        out[client] = by_shape[shape]
    return out


def _count(state) -> ParamCount:
    opts = [state.expert_opt] + ([state.router_opt] if state.router_opt is not None else [])
    trainable = sum(p.numel() for opt in opts for p in optimised(opt))
    held = sum(p.numel() for p in state.adapters.parameters())
    return ParamCount(trainable=int(trainable), held=int(held))


def method_setting(method: Method, n_clients: int) -> dict:
    """What summary.json records of a method's setting: its matching rule, the load-balancing form
    it used, and each device's trainable (and held) parameter count, by device id."""
    from simfed.learn.matching import lb_rule, matching_rule

    from simfed.learn.methods.adapter_method import AdapterMethod
    from simfed.learn.methods.centralized import Centralized

    spec = method.spec
    counts = method_param_counts(method, n_clients)
    shapes = list(method.fed.shapes.values()) if isinstance(method, AdapterMethod) else []
    if isinstance(method, Centralized):
        shapes = [method.shape]
    routed = any(s.has_router for s in shapes)
    return {
        "match": matching_rule(spec) if spec is not None else "n/a",
        "lb_form": lb_rule(spec, routed) if spec is not None else "n/a",
        "trainable_params": [counts[c].trainable if c in counts else 0 for c in range(n_clients)],
        "held_params": [counts[c].held if c in counts else 0 for c in range(n_clients)],
    }
