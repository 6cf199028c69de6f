"""`simfed calibrate`: measure real local steps on this host and fit its effective FLOP/s.

One calibration times the real expert step of one or more method shapes — `train_locally` with
one local step: forward, cross-entropy (+ λ·load balancing for CoMiGS, + the self-pruning term for
HetLoRA), backward with a frozen base, AdamW step — on random token windows of `batch_size` ×
`seq_len`, after `warmup` untimed steps, `steps` timed ones (median). The host is then fitted as

    step time = FLOPs / F  +  activation bytes / B

(`simfed.learn.flops`: matmul FLOPs, and the memory traffic of element-wise work, which FLOP
counters ignore but which grows with the number of experts). From one measured shape only F is
fitted (B = ∞: the FLOP/s is all-in); from shapes with different expert counts (e.g. fedavg, E=1,
and comigs-1g3s, E=4) both, by least squares. F and B are what the simulated world divides a
round's FLOPs and activation bytes by; they are written as a device tier ("this_host" unless
`--tier` says otherwise) into a user tiers file, which scenarios use through `$SIMFED_PROFILES`
(see simfed/sim/profiles.py). `--check` measures other shapes, held out of the fit, and compares
them with the prediction.

Shapes per kind: comigs = 1G1S (2 MLP experts of rank r, top-2, attention LoRA r, router);
comigs-1g3s = 4 MLP experts; hetlora = one LoRA of rank r everywhere (its self-pruning regulariser
included); fedavg = one LoRA of rank r. Measurements need an otherwise idle machine: intra-op
threads are fixed (`threads`).
"""
from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml

from simfed.learn.adapters import AdaptedModel, AdapterShape, DeviceAdapters
from simfed.learn.base_model import load_base_model
from simfed.learn.device import autocast_dtype
from simfed.learn.flops import ModelDims, step_activation_bytes, step_flops
from simfed.learn.local_update import Recipe, new_client_state, train_locally
from simfed.learn.lora import StackedLoRA
from simfed.learn.model_card import load_card
from simfed.run.host_memory import keep_freed_memory

CALIBRATE_KINDS = ("comigs", "comigs-1g3s", "hetlora", "fedavg")
DEFAULT_RANK = {"comigs": 8, "comigs-1g3s": 8, "hetlora": 16, "fedavg": 8}
EXPERTS = {"comigs": 2, "comigs-1g3s": 4, "hetlora": 1, "fedavg": 1}
DEFAULT_TIERS_FILE = Path("~/.config/simfed/tiers.yaml")
# Energy of the calibrated tier is not measured: an assumption in the range of the laptop tier [A].
ASSUMED_JOULES_PER_FLOP = 1.2e-11


@dataclass(frozen=True)
class Measurement:
    """Timed expert steps of one method shape on this host."""

    model: str
    kind: str
    rank: int
    batch_size: int
    seq_len: int
    device: str
    threads: int
    flops: float  # step_flops of one step
    times_s: tuple[float, ...]  # the timed steps, seconds
    activation_bytes: float = 0.0  # step_activation_bytes of one step

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def flops_per_s(self) -> float:
        return self.flops / self.median_s


@dataclass(frozen=True)
class HostFit:
    """This host as the cost model sees it: step time = FLOPs / F + activation bytes / B."""

    flops_per_s: float  # F
    activation_bytes_per_s: float  # B; 0 = not fitted (F is then all-in)

    def predict(self, flops: float, activation_bytes: float) -> float:
        seconds = flops / self.flops_per_s
        if self.activation_bytes_per_s > 0:
            seconds += activation_bytes / self.activation_bytes_per_s
        return seconds


def fit_host(measurements: list[Measurement]) -> HostFit:
    """Least-squares fit of F and B to the median step times, in relative terms (each shape's
    equation t_i = flops_i/F + bytes_i/B is divided by t_i, so fast and slow shapes weigh alike).

    B needs shapes whose activation bytes per FLOP differ (different expert counts); otherwise,
    or if the two-term fit comes out non-physical (a negative term: noise), F alone is fitted."""
    ones = np.ones(len(measurements))
    flops = np.array([[m.flops / m.median_s] for m in measurements])
    inv_f = float(np.linalg.lstsq(flops, ones, rcond=None)[0][0])
    single = HostFit(1.0 / inv_f, 0.0)
    if len({round(m.activation_bytes / m.flops, 12) for m in measurements}) < 2:
        return single
    both = np.array([[m.flops / m.median_s, m.activation_bytes / m.median_s] for m in measurements])
    (inv_f, inv_b), *_ = np.linalg.lstsq(both, ones, rcond=None)
    if inv_f <= 0 or inv_b <= 0:
        return single
    return HostFit(1.0 / float(inv_f), 1.0 / float(inv_b))


def method_shape(kind: str, rank: int) -> AdapterShape:
    if kind not in CALIBRATE_KINDS:
        raise ValueError(f"calibrate supports {', '.join(CALIBRATE_KINDS)}, not {kind!r}")
    return AdapterShape(EXPERTS[kind], rank, rank)


def _hetlora_regulariser(rank: int, lam: float = 5e-3, gamma: float = 0.99):
    """HetLoRA's self-pruning term, as simfed/learn/methods/hetlora.py adds it to every step."""
    from simfed.learn.aggregate import tail_start

    def regulariser(adapters: DeviceAdapters) -> torch.Tensor:
        k = tail_start(rank, gamma)
        terms = [torch.linalg.norm(m.lora_A[0, k:rank]) * torch.linalg.norm(m.lora_B[0, :, k:rank])
                 for m in adapters.modules() if isinstance(m, StackedLoRA)]
        return lam * torch.stack(terms).sum()

    return regulariser


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def measure(model: AdaptedModel, model_name: str, kind: str, rank: int | None = None, steps: int = 7,
            warmup: int = 3, batch_size: int = 4, seq_len: int = 64, threads: int = 2) -> Measurement:
    """Time `steps` real expert steps (after `warmup` untimed ones) of `kind` on `model`."""
    return measure_many(model, model_name, [(kind, rank)], steps, warmup, batch_size, seq_len, threads)[0]


def measure_many(model: AdaptedModel, model_name: str, methods: list[tuple[str, int | None]], steps: int = 7,
                 warmup: int = 3, batch_size: int = 4, seq_len: int = 64, threads: int = 2) -> list[Measurement]:
    """Time several methods' steps interleaved (one step of each in turn, `warmup` untimed rounds
    first), so that a drift of the host's speed (turbo, thermal, neighbours) affects them alike."""
    dev = model.device
    vocab = int(model.model.config.vocab_size)
    tokens = np.random.default_rng(0).integers(0, vocab, size=50_000, dtype=np.int64)
    runs = []
    for i, (kind, rank) in enumerate(methods):
        rank = DEFAULT_RANK[kind] if rank is None else rank
        shape = method_shape(kind, rank)
        generator = torch.Generator(device=dev).manual_seed(i)
        adapters = model.new_adapters(shape, generator)
        recipe = Recipe(local_steps=1, batch_size=batch_size, seq_len=seq_len, lr=2e-3,
                        lb_lambda=0.01 if kind.startswith("comigs") else 0.0, tau=1 << 30)
        regulariser = _hetlora_regulariser(rank) if kind == "hetlora" else None
        runs.append((kind, rank, shape, recipe, new_client_state(adapters, recipe), regulariser,
                     np.random.default_rng(1), []))
    for i in range(warmup + steps):
        for kind, rank, shape, recipe, state, regulariser, rng, times in runs:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            start = time.perf_counter()
            train_locally(model, state, tokens, tokens, recipe, lambda s: 0.0, rng, regulariser)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    dims = ModelDims.of(model)
    return [Measurement(model_name, kind, rank, batch_size, seq_len, str(dev), threads,
                        step_flops(dims, shape, batch_size, seq_len, "experts"), tuple(times),
                        step_activation_bytes(dims, shape, batch_size, seq_len))
            for kind, rank, shape, _recipe, _state, _reg, _rng, times in runs]


def load_adapted(model_name: str, device: str = "auto", threads: int = 2) -> AdaptedModel:
    if threads > 0:
        torch.set_num_threads(threads)
    keep_freed_memory()  # measure steps as the runs take them (simfed/run/host_memory.py)
    dev = resolve_device(device)
    # the runs' precision: bf16 autocast on a GPU
    return AdaptedModel(load_base_model(load_card(model_name), dev), autocast_dtype("auto", dev))




def host_memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    except (ValueError, OSError, AttributeError):
        return 8.0


def tier_row(fit: HostFit, basis: list[Measurement]) -> dict:
    """The calibrated tier in the format of simfed/profiles/tiers.yaml."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    m = basis[0]
    shapes = ", ".join(f"{b.kind} rank {b.rank} ({b.median_s * 1e3:.1f} ms)" for b in basis)
    row = {
        "flops_per_s": float(f"{fit.flops_per_s:.4g}"),
        "memory_gb": [round(host_memory_gb(), 1)],
        "joules_per_flop": ASSUMED_JOULES_PER_FLOP,
        "sigma": 0.0,
        "source": (f"simfed calibrate on {platform.node() or 'this host'} ({platform.processor() or platform.machine()}, "
                   f"{m.device}, {m.threads} threads), {when}: {m.model}, batch {m.batch_size} x {m.seq_len}, "
                   f"medians of {len(m.times_s)} steps: {shapes} [M]; memory = host RAM [M]; energy [A]"),
    }
    if fit.activation_bytes_per_s > 0:
        row["activation_bytes_per_s"] = float(f"{fit.activation_bytes_per_s:.4g}")
    return row


def write_tier(path: Path, name: str, row: dict) -> Path:
    """Add (or replace) tier `name` in the user tiers file at `path`, keeping its other tiers."""
    path = path.expanduser()
    existing = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    tiers = dict(existing or {})
    tiers[name] = row
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# User device tiers (simfed calibrate); use with SIMFED_PROFILES=" + str(path) + "\n"
    path.write_text(header + yaml.safe_dump(tiers, sort_keys=False, width=200), encoding="utf-8")
    return path


def summary(m: Measurement) -> dict:
    d = asdict(m)
    d.update(median_s=m.median_s, flops_per_s=m.flops_per_s)
    return d


def check_prediction(fit: HostFit, measured: Measurement) -> tuple[float, float, float]:
    """(predicted s, measured s, relative error) of `measured`'s step from the fitted host."""
    predicted = fit.predict(measured.flops, measured.activation_bytes)
    error = predicted / measured.median_s - 1.0
    assert math.isfinite(error)
    return predicted, measured.median_s, error
