"""The cost model: FLOPs -> seconds (with per-device, per-round noise), bytes -> seconds, energy.

Pure functions of their arguments; the simulated clock advances only by these numbers, never by
the host's wall clock.
"""
from __future__ import annotations

import math

from simfed.sim.streams import Purpose, stream

BITS_PER_BYTE = 8


def transfer_seconds(nbytes: int, bps: float, latency_s: float) -> float:
    """latency + bytes * 8 / bandwidth. Nothing to send costs nothing (no round trip either)."""
    if nbytes <= 0:
        return 0.0
    return latency_s + nbytes * BITS_PER_BYTE / bps


def bytes_moved(nbytes: int, bps: float, latency_s: float, elapsed_s: float) -> int:
    """Bytes of an `nbytes` transfer that had arrived `elapsed_s` after it began (a cut transfer).
    The latency passes before the first byte; whole bytes only."""
    if nbytes <= 0:
        return 0
    moved = math.floor(max(0.0, elapsed_s - latency_s) * bps / BITS_PER_BYTE)
    return min(nbytes, moved)


def compute_seconds(flops: float, flops_per_s: float, slowdown: float,
                    activation_bytes: float = 0.0, activation_bytes_per_s: float = 0.0) -> float:
    """Time of `flops` on a device of `flops_per_s`, stretched by this round's `slowdown`.

    With an effective activation bandwidth (a calibrated profile), the element-wise memory
    traffic adds its own time: FLOPs / FLOP/s + bytes / (bytes/s), a two-term roofline sum.
    A profile without one (0) charges FLOPs alone, its FLOP/s being an all-in effective figure."""
    seconds = flops / flops_per_s
    if activation_bytes_per_s > 0:
        seconds += activation_bytes / activation_bytes_per_s
    return seconds * slowdown


def throttled_seconds(seconds: float, after_s: float, factor: float) -> float:
    """Sustained-load thermal throttling: `seconds` of compute at full speed take as long for
    the first `after_s`, then the device runs at `factor` of its speed (each round starts cool)."""
    if seconds <= after_s or factor >= 1.0:
        return seconds
    return after_s + (seconds - after_s) / factor


def compute_slowdown(seed: int, device: int, round_index: int, sigma: float) -> float:
    """Run-to-run noise of one device in one round: lognormal with median 1 and ln-sd `sigma`
    (thermal state, background apps). Drawn from the (seed, COMPUTE_NOISE, device, round) stream."""
    z = stream(seed, Purpose.COMPUTE_NOISE, device, round_index).standard_normal()
    return math.exp(sigma * z)


def failure_after_s(seed: int, device: int, round_index: int, hazard_per_hour: float) -> float:
    """Active seconds until `device` fails in round `round_index` under a constant hazard
    (exponential); inf when the hazard is 0. From the (seed, DROPOUT, device, round) stream."""
    if hazard_per_hour <= 0:
        return math.inf
    u = stream(seed, Purpose.DROPOUT, device, round_index).random()
    return -math.log1p(-u) * 3600.0 / hazard_per_hour


def recovery_seconds(seed: int, device: int, round_index: int, mean_s: float) -> float:
    """How long `device` stays offline after a hazard dropout in round `round_index`: exponential
    with mean `mean_s` (0: not at all). From the (seed, RECOVERY, device, round) stream."""
    if mean_s <= 0:
        return 0.0
    return float(stream(seed, Purpose.RECOVERY, device, round_index).exponential(mean_s))
