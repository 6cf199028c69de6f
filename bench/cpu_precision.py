"""fp32 vs bf16 autocast for one local step on this CPU: what `precision: auto` decides on.

Times `simfed.learn.cpu_precision.time_step` (forward and backward of one rank-8 LoRA step on the
real model, median of --repeats after one warm-up) in both precisions, alternating, for each
batch × sequence shape, and prints the ratio and what `auto` would choose (it needs native bf16,
a step of >= 1e10 FLOPs and >= 1.1x). Writes no cache. Run it alone on a quiet machine.
`--per-call-casts` also times bf16 as simfed ran it before simfed/learn/frozen_casts.py (autocast
casting every frozen weight at every matmul), right after, and prints that ratio.

    .venv/bin/python bench/cpu_precision.py --model smollm2-135m --shapes 2x64 4x64 4x128
"""
from __future__ import annotations

import argparse
from contextlib import contextmanager
from typing import Iterator

import torch

import simfed.learn.cpu_precision as cp
from simfed.learn.adapters import AdaptedModel
from simfed.learn.base_model import load_base_model
from simfed.learn.flops import ModelDims, step_flops
from simfed.learn.frozen_casts import FrozenCasts
from simfed.learn.model_card import load_card


class PerCallCasts(FrozenCasts):
    """No copies: autocast casts each frozen weight at every call, as before the copies."""

    @contextmanager
    def swapped_in(self, dtype: torch.dtype) -> Iterator[None]:
        yield


def time_per_call_casts(model: AdaptedModel, b: int, t: int, repeats: int) -> float:
    copies, model.frozen_casts = model.frozen_casts, PerCallCasts(model.model)
    try:
        return cp.time_step(model, b, t, torch.bfloat16, repeats=repeats)
    finally:
        model.frozen_casts = copies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--shapes", nargs="+", default=["2x64", "4x64", "4x128"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--per-call-casts", action="store_true", help="also time bf16 without the frozen weights' copies")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = AdaptedModel(load_base_model(load_card(args.model), torch.device("cpu")))
    print(f"cpu {cp.cpu_model()}")
    print(f"native_bf16 {','.join(cp.native_bf16_flags()) or 'none'}")
    print(f"threads {torch.get_num_threads()}")
    for shape in args.shapes:
        b, t = (int(v) for v in shape.split("x"))
        flops = step_flops(ModelDims.of(model), cp.PROBE_SHAPE, b, t)
        fp32 = cp.time_step(model, b, t, None, repeats=args.repeats)
        bf16 = cp.time_step(model, b, t, torch.bfloat16, repeats=args.repeats)
        ratio = fp32 / bf16
        auto = ("bfloat16" if cp.native_bf16_flags() and flops >= cp.MIN_STEP_FLOPS and ratio >= cp.MIN_SPEEDUP
                else "float32")
        print(f"{args.model} {shape} step_flops {flops:.3g} fp32_s {fp32:.3f} bf16_s {bf16:.3f} "
              f"bf16_speedup {ratio:.2f} auto {auto}", flush=True)
        if args.per_call_casts:
            per_call = time_per_call_casts(model, b, t, args.repeats)
            print(f"{args.model} {shape} bf16_per_call_casts_s {per_call:.3f} "
                  f"copies_speedup {per_call / bf16:.2f} per_call_bf16_speedup {fp32 / per_call:.2f}", flush=True)


if __name__ == "__main__":
    main()
