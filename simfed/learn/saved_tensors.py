"""What autograd keeps for a backward pass: the tensors a graph saved, counted by storage.

A graph node (`grad_fn`) exposes the tensors it saved as `_saved_*` attributes; walking the graph
from an output and summing each distinct storage once gives the bytes a forward leaves alive for
its backward — the activation memory of a training step without an allocator's slack (tensors a
custom `autograd.Function` keeps as plain attributes of its ctx are not seen; simfed's own keep
theirs in `saved_tensors`, which are).
`simfed.learn.memory` uses it to count the tensors an MLP's activation function keeps (HF's
activations differ: `silu` keeps its input, GPT-2's tanh-GELU written out in elementary ops keeps
four input-sized tensors), and bench/memory_need.py to compare the memory model with a real step.
"""
from __future__ import annotations

from typing import Callable

import torch


def saved_storages(output: torch.Tensor, exclude: set[int] | frozenset[int] = frozenset()) -> dict[int, int]:
    """{storage address: bytes} of every tensor saved in `output`'s autograd graph, each storage
    once, leaving out the storages in `exclude` (weights: kept by the model, not by the step)."""
    storages: dict[int, int] = {}
    seen: set[object] = set()
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for value in _saved_values(node):
            tensors = value if isinstance(value, (tuple, list)) else (value,)
            for tensor in tensors:
                if isinstance(tensor, torch.Tensor):
                    key = tensor.untyped_storage().data_ptr()
                    if key not in exclude:
                        storages[key] = tensor.untyped_storage().nbytes()
        stack.extend(next_node for next_node, _ in node.next_functions)
    return storages


def weight_storages(*modules: torch.nn.Module) -> set[int]:
    """Storage addresses of `modules`' parameters and buffers: what the model holds whether or not
    a step runs, to leave out of `saved_storages` (a frozen linear's backward keeps its weight)."""
    return {t.untyped_storage().data_ptr() for m in modules for t in [*m.parameters(), *m.buffers()]}


def _saved_values(node: object) -> list[object]:
    """What one graph node saved: built-in nodes as `_saved_<name>` attributes (a tensor, or a
    tuple of them, e.g. an index's), custom `autograd.Function`s in `saved_tensors`."""
    names = [attr for attr in dir(node) if attr.startswith("_saved_")]
    if hasattr(node, "saved_tensors"):
        names.append("saved_tensors")
    values = []
    for name in names:
        try:
            values.append(getattr(node, name))
        except RuntimeError:  # already freed by a backward
            continue
    return values


def kept_per_element(activation: Callable[[torch.Tensor], torch.Tensor]) -> int:
    """Input-sized tensors `activation` keeps for its backward besides its own output (its input
    counted when kept), run once on a small fp32 CPU tensor: activation modules hold no weights,
    so a meta-device skeleton's module answers too. Its output is left out because the MLP
    around it keeps that tensor anyway (the output-side LoRA's input, or a factor of the gated
    product), whichever op saves it; scalars it saves (below one input's size) are not counted.
    The input is fixed, not drawn: the probe runs during a method's setup, and drawing from
    torch's global generator there would shift a run's dropout masks between a run and its resume."""
    with torch.inference_mode(False), torch.enable_grad():
        x = torch.linspace(-3.0, 3.0, 128).reshape(4, 32).requires_grad_()
        y = activation(x)
        if y.grad_fn is None:
            return 0
        sizes = saved_storages(y, exclude={y.untyped_storage().data_ptr()}).values()
    return round(sum(size for size in sizes if size >= x.nbytes) / x.nbytes)
