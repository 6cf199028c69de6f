"""What moves between a device and the server: its byte count and the dtype it travels in.

The runner, not the method, counts bytes (DESIGN.md): Σ numel × element size of the tensors
that move, in the dtype the scenario says they travel in. Travel is simulated for real — a
float16 payload is rounded to float16 and back — so the learning sees what the bytes carry.
"""
from __future__ import annotations

import math

import torch

TRAVEL_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def element_size(dtype_name: str) -> int:
    return torch.empty((), dtype=TRAVEL_DTYPES[dtype_name]).element_size()


def shapes_bytes(shapes: dict[str, tuple[int, ...]], dtype_name: str) -> int:
    """Bytes of tensors of these shapes in the travel dtype (known before any training)."""
    size = element_size(dtype_name)
    return sum(math.prod(shape) * size for shape in shapes.values())


def payload_bytes(tensors: dict[str, torch.Tensor], dtype_name: str) -> int:
    """Bytes of these tensors in the travel dtype."""
    size = element_size(dtype_name)
    return sum(t.numel() * size for t in tensors.values())


def travel(tensors: dict[str, torch.Tensor], dtype_name: str) -> dict[str, torch.Tensor]:
    """The tensors as they arrive: cast to the travel dtype and back to their own dtype."""
    dtype = TRAVEL_DTYPES[dtype_name]
    return {k: t.detach().to(dtype).to(t.dtype) for k, t in tensors.items()}
