"""The frozen base's low-precision copies, made once: the casts autocast would make at every matmul.

Under `torch.autocast(dtype=bf16)` a linear map casts its fp32 operands to bf16 at every call.
Autocast's own cast cache keeps only leaf tensors that require grad (trainable weights), so the
frozen base — every weight of the model but the adapters — is read in fp32 and written in bf16
again at every forward of every step, and the LM head once per device in a batched step: 0.8 GB
of memory traffic a SmolLM2 forward. Made once, a bf16 SmolLM2 step is 1.05-1.09x faster (2 x 64
0.728 -> 0.670 s, 4 x 64 1.097 -> 1.023 s, 4 x 128 1.760 -> 1.682 s; medians of 4 alternations of
3 steps, Intel Xeon with AMX, 2 threads; bench/cpu_precision.py --per-call-casts).

`FrozenCasts` makes each copy once and puts it in place of the fp32 weight, on the module that
uses it, for the time of an autocast region (`AdaptedModel._precision`); the fp32 parameters are
back on exit, so everything outside the region (fp32 passes, the precision probe's fp32 step, the
memory and FLOP counts) sees the model as loaded. This is exact, bit for bit: autocast's cast of
a weight is `weight.to(bf16)`, the copy here is the same `weight.to(bf16)`, and autocast passes a
tensor that is already bf16 to the op unchanged, so the op sees the same operands (test:
tests/learn/test_frozen_casts.py, logits and every gradient `torch.equal` to plain autocast's).

Only the weights (and biases) of `nn.Linear` and GPT-2's `Conv1D` are swapped: autocast casts
every operand of `linear` and `addmm`, so nothing else can read them differently. Embeddings and
norms keep their fp32 weights (a lookup and autocast's fp32 norms do not cast); a head tied to
the embedding gets its copy on the head module only, and the embedding keeps the fp32 tensor.
A weight that requires grad is left alone (autocast caches its cast itself, and its gradient
must be fp32). A copy is made again if its weight was replaced, moved or written in place
through the autograd-visible API (identity, storage or version counter differ), so loading other
base weights cannot leave a stale copy behind; a write through `.data`, which no version counter
sees, is not detected (simfed makes none). Inside a region the module holds the copy, so what is
done to the model there acts on the copies: a write into one is refused with an error when the
region ends (the fp32 weight never saw it), and a linear map called with autocast switched off
inside a region would see bf16 weights (simfed calls none: its fp32 blocks,
`lora._fp32_on_a_cpu` and `cpu_attention`, run no frozen linear). The copies cost memory on the
model's device: 2 bytes a weight (0.27 GB for SmolLM2-135M), for the model's life, in every Ray
replica too, which simfed.learn.memory's device model does not count (it is the host's, not a
device's, cost).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

CAST_MODULES = (nn.Linear, Conv1D)  # their forward is one `linear` / `addmm`: every operand cast under autocast
CAST_NAMES = ("weight", "bias")


@dataclass
class _Copy:
    """One frozen tensor's low-precision copy, and what it was made from."""

    module: nn.Module
    name: str
    original: nn.Parameter
    copy: nn.Parameter
    source: tuple[int, int]  # (storage address, version counter) of `original` when copied


def _source(tensor: torch.Tensor) -> tuple[int, int]:
    return tensor.untyped_storage().data_ptr(), tensor._version


class FrozenCasts:
    """Low-precision copies of a model's frozen linear weights, swapped in for autocast regions."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._copies: dict[torch.dtype, list[_Copy]] = {}
        self._active: torch.dtype | None = None  # the dtype swapped in now (regions nest)

    def frozen_tensors(self) -> list[tuple[nn.Module, str, nn.Parameter]]:
        """(module, name, parameter) of every frozen floating weight and bias of a linear map."""
        out = []
        for module in self.model.modules():
            if not isinstance(module, CAST_MODULES):
                continue
            for name in CAST_NAMES:
                param = module._parameters.get(name)
                if param is not None and not param.requires_grad and param.is_floating_point():
                    out.append((module, name, param))
        return out

    def copies(self, dtype: torch.dtype) -> list[_Copy]:
        """The copies in `dtype` of what `frozen_tensors` finds now, made again where a weight
        changed since (another tensor in its place, or the same one written in place or moved).
        A tensor that already is `dtype` is its own copy."""
        current = self.frozen_tensors()
        copies = self._copies.get(dtype)
        fresh = copies is not None and len(copies) == len(current) and all(
            c.module is module and c.name == name and c.original is param and c.source == _source(param)
            for c, (module, name, param) in zip(copies, current)
        )
        if not fresh:
            copies = [
                _Copy(module, name, param,
                      param if param.dtype == dtype else nn.Parameter(param.detach().to(dtype), requires_grad=False),
                      _source(param))
                for module, name, param in current
            ]
            self._copies[dtype] = copies
        return copies

    @contextmanager
    def swapped_in(self, dtype: torch.dtype) -> Iterator[None]:
        """The `dtype` copies in place of the fp32 weights for the body of a `with` block.

        A region inside a region of the same dtype changes nothing; the outermost restores."""
        if self._active is not None:
            if self._active != dtype:
                raise RuntimeError(f"an autocast region of {dtype} inside one of {self._active}")
            yield
            return
        copies = self.copies(dtype)
        versions = [c.copy._version for c in copies]
        self._active = dtype
        try:
            for c in copies:
                c.module._parameters[c.name] = c.copy
            yield
        finally:
            for c in copies:
                c.module._parameters[c.name] = c.original
            self._active = None
        written = [f"{type(c.module).__name__}.{c.name}" for c, v in zip(copies, versions)
                   if c.copy is not c.original and c.copy._version != v]
        if written:
            self._copies.pop(dtype, None)
            raise RuntimeError(f"frozen weights written inside an autocast region, where they are bf16 copies: "
                               f"{', '.join(written[:3])}{' ...' if len(written) > 3 else ''}; write them outside it")

    def keep_only(self, dtype: torch.dtype | None) -> None:
        """Free the copies of every dtype but `dtype` (None: all of them); made again when needed."""
        self._copies = {d: c for d, c in self._copies.items() if d == dtype}

    def nbytes(self) -> int:
        """Bytes the copies hold (a tensor that is its own copy holds none)."""
        return sum(c.copy.numel() * c.copy.element_size()
                   for copies in self._copies.values() for c in copies if c.copy is not c.original)
