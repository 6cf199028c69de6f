"""The server's merge: the cost model's FLOPs against the measured time of simfed's own merge.

FlexLoRA's merge (`simfed.learn.aggregate.flexlora_aggregate`, float64 QR + SVD per MLP module) and
a weighted mean, on SmolLM2-135M's shapes (30 layers, d 576, MLP 1536) for N devices of MLP ranks
16-32, with random factors: the time does not depend on the values. Prints, one figure a line, the
model's FLOPs, the measured seconds (median of --repeats) and the effective FLOP/s they imply, the
figure `world.server.flops_per_s` stands for.

    .venv/bin/python bench/merge_cost.py --devices 10 100 --repeats 3
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from simfed.learn.aggregate import flexlora_aggregate, weighted_mean
from simfed.learn.merge_flops import flexlora_merge_flops, mean_flops

LAYERS, D, D_FF = 30, 576, 1536
MODULES = {"gate_proj": (D_FF, D), "up_proj": (D_FF, D), "down_proj": (D, D_FF)}  # (out, in)
RANKS = [32, 32, 24, 24, 24, 24, 16, 16, 16, 16]  # a phones_mixed-like fleet, repeated


def uploads(n: int, gen: torch.Generator) -> tuple[list[dict[str, torch.Tensor]], list[int]]:
    ranks = [RANKS[i % len(RANKS)] for i in range(n)]
    out = []
    for r in ranks:
        state = {}
        for layer in range(LAYERS):
            for name, (o, i) in MODULES.items():
                state[f"l{layer}.{name}.lora_A"] = torch.randn(r, i, generator=gen)
                state[f"l{layer}.{name}.lora_B"] = torch.randn(o, r, generator=gen)
        out.append(state)
    return out, ranks


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, nargs="+", default=[10, 100])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"threads {torch.get_num_threads()}")
    gen = torch.Generator().manual_seed(0)
    for n in args.devices:
        ups, ranks = uploads(n, gen)
        modules = [MODULES[name] for _ in range(LAYERS) for name in MODULES]
        flops = flexlora_merge_flops(modules, ranks, 0)
        seconds = timed(lambda: flexlora_aggregate(ups, [1.0] * n, [1.0] * n, max(ranks)), args.repeats)
        print(f"flexlora N={n} k={sum(ranks)} model_flops {flops:.3e} measured_s {seconds:.3f} "
              f"effective_flops_per_s {flops / seconds:.3e}")
        same = [ups[0]] * n  # a mean needs one shape (HetLoRA pads to it first)
        numel = sum(t.numel() for t in same[0].values())
        flops = mean_flops(n, numel)
        seconds = timed(lambda: weighted_mean(same, [1.0] * n), args.repeats)
        print(f"mean N={n} numel {numel} model_flops {flops:.3e} measured_s {seconds:.4f} "
              f"effective_flops_per_s {flops / seconds:.3e}")


if __name__ == "__main__":
    main()
