"""What share of a device's local training survives its next download (wasted-work accounting).

A straggler's update (or one cut mid-upload) never reaches the server, but the device keeps its
trained state. Whether that training was for nothing depends on the method: the next download
overwrites the tensors the server holds (FedAvg, HetLoRA, FlexLoRA, FFA-LoRA: all of them), and
leaves the private ones (CoMiGS's specialists; a local-only method's whole model). The engine
counts the rest as wasted (simfed/sim/device.py).

The share is by parameters: of the device's trainable adapter elements (every tensor of its
adapter layout, `DeviceAdapters.views`), those the method keeps private. A method can state its
own share with a `surviving_share(client) -> float` method instead.
"""
from __future__ import annotations

import torch

from simfed.learn.methods.base import Method


def surviving_share(method: Method, client: int) -> float:
    """Fraction in [0, 1] of `client`'s trained adapter elements the next download leaves alone;
    1.0 for a method without per-device adapters (nothing of its training is overwritten)."""
    from simfed.learn.methods.adapter_method import AdapterMethod

    if not isinstance(method, AdapterMethod):
        return 1.0
    fed = method.fed
    shape = fed.shapes.get(client)
    if shape is None:
        return 1.0
    views = fed.model.new_adapters(shape, torch.Generator().manual_seed(0)).views()
    total = sum(v.numel() for v in views.values())
    private = sum(v.numel() for name, v in views.items() if not fed.shared(name))
    return private / total if total else 1.0
