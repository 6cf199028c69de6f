"""`training.precision: auto` on a CPU: bf16 autocast only where this host runs it faster, measured.

Some CPUs have native bf16 matrix instructions (AMX on Intel Sapphire Rapids and later; AVX-512
BF16 on Cooper Lake, AMD Zen 4 and later); on one of them bf16 autocast made a SmolLM2 4 × 64
forward and backward 1.24× faster, on an Intel Xeon with AMX 1.34× (2 × 64: 1.16×, 4 × 128: 1.96×;
with the frozen casts made once, simfed/learn/frozen_casts.py, and attention in fp32,
simfed/learn/cpu_attention.py; 0.94×, 1.15× and 1.31× without them). Elsewhere torch emulates
bf16 and it is slower, and even on such a CPU small matmuls lose to the casts around them. So
`auto` keeps fp32 unless all three hold:

1. the CPU reports a native bf16 flag (`/proc/cpuinfo`: amx_bf16 or avx512_bf16);
2. the run's step is large enough for the matrix units to matter (`MIN_STEP_FLOPS`; the tiny
   models of the tests never qualify, so their numbers do not depend on the host);
3. a timed local step (the run's model, batch and sequence length, one rank-8 LoRA) is at least
   `MIN_SPEEDUP` faster in bf16 than in fp32 — a margin, so that timing noise does not flip it.

The answer is measured once and cached per host, torch build, model and step shape in
`$SIMFED_CACHE/cpu_precision.json`, so every later run (and a resume) on this host trains in the
same precision; the run's `summary.json` environment records the choice and why. A measurement
taken while other work loads the CPU can be wrong: delete that file to measure again.
"""
from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from simfed.learn.adapters import AdaptedModel, AdapterShape
from simfed.learn.base_model import cache_root
from simfed.learn.flops import ModelDims, step_flops

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
MIN_STEP_FLOPS = 1e10  # below this a step is too small for bf16 matrix units to pay for the casts
MIN_SPEEDUP = 1.10  # bf16 must be this much faster than fp32 to be chosen
PROBE_SHAPE = AdapterShape(n_experts=1, mlp_rank=8, attn_rank=8)
CACHE_FILE = "cpu_precision.json"
# how simfed runs a bf16 step, in the cache key: a change that makes bf16 faster or slower (the
# frozen weights' casts made once, simfed/learn/frozen_casts.py; attention in fp32,
# simfed/learn/cpu_attention.py) invalidates earlier measurements
BF16_PATH = "frozen-casts-once, fp32 attention"


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision `auto` resolved to on this CPU, and why (recorded in summary.json)."""

    precision: str  # "float32" or "bfloat16"
    reason: str
    fp32_s: float | None = None  # median seconds of the timed step, when measured
    bf16_s: float | None = None


def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo`), or what `platform` says elsewhere."""
    for line in _cpuinfo().splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def native_bf16_flags() -> tuple[str, ...]:
    """The native bf16 instruction flags this CPU reports (none on non-Linux hosts)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return tuple(f for f in NATIVE_BF16_FLAGS if f in flags)
    return ()


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cache_key(model_name: str, batch_size: int, seq_len: int) -> str:
    """What a measurement holds for: the host, torch build, threads, model, step shape, and the way
    simfed runs bf16 (`BF16_PATH`: a decision measured before the frozen casts were made once is
    measured again)."""
    return (f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads | {model_name} | "
            f"{batch_size}x{seq_len} | {BF16_PATH}")


def choose_cpu_precision(model: AdaptedModel, batch_size: int, seq_len: int, cache_dir: Path | None = None,
                         timer: Callable[[AdaptedModel, int, int, torch.dtype | None], float] | None = None
                         ) -> PrecisionChoice:
    """What `auto` means for `model` at `batch_size` × `seq_len` on this CPU (see the module doc)."""
    flags = native_bf16_flags()
    if not flags:
        return PrecisionChoice("float32", "no native bf16 on this CPU (amx_bf16/avx512_bf16 absent)")
    flops = step_flops(ModelDims.of(model), PROBE_SHAPE, batch_size, seq_len)
    if flops < MIN_STEP_FLOPS:
        return PrecisionChoice("float32", f"step of {flops:.2g} FLOPs, below {MIN_STEP_FLOPS:.0e}: too small for bf16 to pay")
    path = (cache_dir or cache_root()) / CACHE_FILE
    key = cache_key(model.base.card.name, batch_size, seq_len)
    cached = _read(path).get(key)
    if cached is not None:
        return PrecisionChoice(**cached)
    timer = timer or time_step
    fp32_s, bf16_s = timer(model, batch_size, seq_len, None), timer(model, batch_size, seq_len, torch.bfloat16)
    speedup = fp32_s / bf16_s
    chosen = "bfloat16" if speedup >= MIN_SPEEDUP else "float32"
    choice = PrecisionChoice(chosen, f"measured on {cpu_model()} ({', '.join(flags)}): a step takes {fp32_s:.3g} s in "
                             f"fp32, {bf16_s:.3g} s in bf16 autocast ({speedup:.2f}x; bf16 needs {MIN_SPEEDUP:.2f}x)",
                             fp32_s, bf16_s)
    _write(path, key, choice)
    return choice


def time_step(model: AdaptedModel, batch_size: int, seq_len: int, autocast: torch.dtype | None,
              warmup: int = 1, repeats: int = 3) -> float:
    """Median seconds of a forward and backward of one rank-8 LoRA step under `autocast`."""
    previous = model.autocast
    model.autocast = autocast
    try:
        adapters = model.new_adapters(PROBE_SHAPE, torch.Generator(device=model.device).manual_seed(0))
        params = adapters.expert_parameters()
        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(0, int(model.model.config.vocab_size), (batch_size, seq_len), generator=gen).to(model.device)
        times = []
        with model.using(adapters):
            for i in range(warmup + repeats):
                start = time.perf_counter()
                logits = model.logits(ids)
                loss = logits.float().logsumexp(-1).mean()
                grads = torch.autograd.grad(loss, params)
                del grads, logits, loss
                if i >= warmup:
                    times.append(time.perf_counter() - start)
        return statistics.median(times)
    finally:
        model.autocast = previous


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write(path: Path, key: str, choice: PrecisionChoice) -> None:
    table = _read(path)
    table[key] = asdict(choice)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(table, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
