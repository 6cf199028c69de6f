"""A paper-scale local step (64 × 128 tokens) on the SmolLM2 and GPT-2 shapes: tokens/s, FLOP/s,
the fraction of the accelerator's bf16 peak, and the time that makes for one column of Table 1.

The paper's setting (ALGORITHMS.md, Appendix B): a local iteration is 64 sequences × 128 tokens.
Per model, two steps through simfed's own training code (`AdaptedModel`, AdamW, as
bench/local_step.py): `lora` — one rank-8 LoRA on every attention and MLP linear, the shape of
Local, FedAvg, FFA-LoRA, PCL and Centralized — and `comigs_1g1s` — two rank-8 MLP experts under a
top-2 router + the attention LoRA, loss CE + 0.01·LB, the shape of every CoMiGS variant and MoE
baseline of Table 1. FLOPs per step are the cost model's (`simfed.learn.flops.step_flops`), so
FLOP/s = those FLOPs / the median step's wall time.

The fraction of peak: the GPU's dense bf16 tensor-core peak from NVIDIA's datasheets (`PEAK_BF16`,
matched on `torch.cuda.get_device_name`), or `--peak-tflops`; none is printed where neither is
known (a CPU).

The moonshot: one column of the paper-scale Table 1 (every method, 3 seeds:
scenarios/paper_scale/table1_multilingual.yaml for SmolLM2, its `_gpt2_hub` twin for GPT-2) in
≤ 10 minutes on one GPU. Its FLOPs come from analysis/study_cost.py (the same cost model: expert
steps, router phases, PCL's validation passes, whole-split evaluations); the extrapolation runs
each method's FLOPs at the measured rate of its shape (mixtures at `comigs_1g1s`'s, the rest and
the round-0 evaluation at `lora`'s). What it leaves out, so read it as a lower bound: the
forward-only evaluations and router steps run at the training step's rate; the rounds' Python,
aggregation and data batches are not counted; devices train one after the other.

The model: `smollm2-135m` (the offline GGUF) or, where it cannot load, `smollm2-135m-random`
(its architecture from its config, random weights: the same shapes and FLOPs), said in the
output; `gpt2-124m-random` is GPT-2 124M's architecture from its config (the hub's weights are
not on this machine or a GPU box). Random weights change no FLOP and no kernel.

On a CPU with 24 GiB a 64 × 128 SmolLM2 step in fp32 does not fit (the kernel's OOM killer ended
it at 24 GB: eager autograd keeps more than `simfed.learn.memory`'s 17 GB estimate); measure
there with `--batch 16`, which runs at the same FLOP/s within this CPU's noise. One figure a line:

    <model>_<step>_step_s 0.123
    <model>_<step>_tokens_per_s 66600
    <model>_<step>_flops_per_s 1.2e+14
    <model>_<step>_frac_of_bf16_peak 0.12
    <model>_table1_column_min 9.8

    python bench/paper_step.py [--device cuda] [--precision auto] [--models smollm2-135m gpt2-124m-random]
        [--batch 64 --seq-len 128] [--steps 5 --warmup 2] [--peak-tflops 989]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from batched import load_model
from local_step import alternating_times, comigs_step_fn
from simfed.config import load_scenario
from simfed.learn.adapters import AdapterShape
from simfed.learn.flops import ModelDims, step_flops

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # analysis/ is a folder of scripts: importable from the repository root
from analysis import study_cost  # noqa: E402
RANK = 8
# dense (no sparsity) bf16 tensor-core TFLOP/s, NVIDIA datasheets; the more specific name first
PEAK_BF16 = [("GH200", 989.4), ("H200 NVL", 835.0), ("H200", 989.4), ("H100 NVL", 835.0),
             ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0), ("L40S", 362.1), ("L40", 181.0),
             ("L4", 121.0)]
# one column of the paper-scale Table 1, per model family
TABLE1 = {"smollm2": ROOT / "scenarios/paper_scale/table1_multilingual.yaml",
          "gpt2": ROOT / "scenarios/paper_scale/table1_multilingual_gpt2_hub.yaml"}
STEPS = {"lora": 1, "comigs_1g1s": 2}  # step name → MLP experts E


def bf16_peak(device: torch.device, override_tflops: float | None) -> float | None:
    """The accelerator's dense bf16 peak in FLOP/s, or None where it is not known."""
    if override_tflops is not None:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tf * 1e12 for key, tf in PEAK_BF16 if key in name), None)


def table1_seconds(path: Path, dims: ModelDims, rate: dict[str, float]) -> tuple[float, float, int]:
    """(FLOPs, seconds, seeds) of the study at `path` on a model of shapes `dims` (the measured
    model's: the scenario's own card may not load here): each method's FLOPs at its shape's
    rate (mixtures at comigs_1g1s's, everything else and round 0 at lora's)."""
    total, per_method = study_cost.study_cost(path, dims)  # total over the seeds, per method one seed
    scenario = load_scenario(path)
    kinds = {m.name: m.kind for m in scenario.methods}
    seeds = len(scenario.seeds)
    mixture_flops = sum(c.flops for name, c in per_method.items() if kinds[name] in study_cost.MIXTURE_KINDS) * seeds
    seconds = mixture_flops / rate["comigs_1g1s"] + (total.flops - mixture_flops) / rate["lora"]
    return total.flops, seconds, seeds


def measure(requested: str, args: argparse.Namespace, device: torch.device, peak: float | None) -> None:
    """Both steps on one model, their figures, and its Table 1 column's time."""
    model, name = load_model(requested, args.device, args.precision)
    family = next((f for f in TABLE1 if name.startswith(f)), None)  # None: a smoke-test model
    vocab = int(model.model.config.vocab_size)
    rng = np.random.default_rng(0)
    ids = torch.as_tensor(rng.integers(0, vocab, size=(args.batch, args.seq_len + 1)), dtype=torch.long,
                          device=device)
    dims = ModelDims.of(model)
    steps = {label: comigs_step_fn(model, ids, e, "auto")[0] for label, e in STEPS.items()}
    times = alternating_times(steps, args.warmup, args.steps)
    print(f"# {name} (autocast {model.autocast}): steps {({k: ['%.3f' % t for t in v] for k, v in times.items()})}")
    rate = {}
    for label, e in STEPS.items():
        median = statistics.median(times[label])
        rate[label] = step_flops(dims, AdapterShape(e, RANK, RANK), args.batch, args.seq_len, "experts") / median
        print(f"{name}_{label}_step_s {median:.4f}")
        print(f"{name}_{label}_tokens_per_s {args.batch * args.seq_len / median:.1f}")
        print(f"{name}_{label}_flops_per_s {rate[label]:.4g}")
        if peak:
            print(f"{name}_{label}_frac_of_bf16_peak {rate[label] / peak:.4f}")
    if family is None:
        return
    flops, seconds, seeds = table1_seconds(TABLE1[family], dims, rate)
    print(f"# {name}: one Table 1 column ({TABLE1[family].relative_to(ROOT)}, {seeds} seeds) = "
          f"{flops / 1e15:.1f} PFLOP at the measured rates; the moonshot asks <= 10 min")
    print(f"{name}_table1_column_min {seconds / 60:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="auto: bf16 autocast on a CUDA GPU that has it, fp32 elsewhere")
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gpt2-124m-random"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the accelerator's peak, where PEAK_BF16 lacks it")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    peak = bf16_peak(device, args.peak_tflops)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"# {where}; bf16 peak {'%.4g' % peak if peak else 'unknown'} FLOP/s; {args.batch} x {args.seq_len} "
          f"tokens a step, median of {args.steps} after {args.warmup} warm-up, {args.threads} threads")
    for requested in args.models:
        try:
            measure(requested, args, device, peak)
        except Exception as err:  # noqa: BLE001 - one model's failure must not cost the other's figures
            print(f"# {requested} failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()

if __name__ == "__main__":
    main()
