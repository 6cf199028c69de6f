"""Devices and links from data: a phone-score list for compute, a per-user link-speed trace.

Compute (`fleet[].compute_scores: PATH`): a JSON list of phone models in the AI-Benchmark format
of ../shared/traces/device_ai_benchmark_list.json (`[{"Model": ..., "CPU_F_AI_Score": "1548", ...}]`;
`fleet[].score_field` picks the score, default CPU_F_AI_Score, the CPU float-inference score).
Entries whose score is not a positive number are skipped. Each device draws one entry uniformly
(its FLEET stream) and gets

    flops_per_s = tier median FLOP/s (or the group's flops_per_s) × score / median(scores),

i.e. the ratio to the list's median: the tier sets the level, the list the spread (AI-Benchmark
CPU scores spread p10/p50/p90 = 274/1548/3414, about 12×). No lognormal tier spread is applied
on top.

Links (`fleet[].link_trace: PATH`): the FLASH per-user format of
../shared/traces/network_speed_flash.json, `{user: {down_u, down_sigma, up_u, up_sigma}}` in kbit/s
(mean and standard deviation of the user's measured throughput). Each device draws one user
(users in sorted key order; its FLEET stream): its down/up rates are the user's means (the
link's lognormal spread across users and the group's down/up overrides are not applied). In
each round the rates vary within the user: rate × exp(s·z − s²/2), s² = ln(1 + (sigma/u)²), a
lognormal with the user's mean and standard deviation; one z per (seed, LINK_VARIATION, device,
round) for both directions (a bad moment is bad both ways). Latency and radio energy still come
from the group's `link`.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache

import numpy as np

from simfed.sim.streams import Purpose, stream

KBPS = 1_000  # bits per second in a kilobit per second


@lru_cache(maxsize=16)
def load_scores(path: str, field: str = "CPU_F_AI_Score") -> tuple[float, ...]:
    """The positive scores of `field` in the phone list at `path`, in file order."""
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of devices")
    scores = []
    for row in rows:
        try:
            value = float(str(row.get(field, "")).strip())
        except (ValueError, AttributeError):
            continue
        if math.isfinite(value) and value > 0:
            scores.append(value)
    if not scores:
        raise ValueError(f"{path}: no device has a positive {field!r}")
    return tuple(scores)


@lru_cache(maxsize=16)
def load_link_users(path: str) -> tuple[tuple[float, float, float, float], ...]:
    """(down_u, down_sigma, up_u, up_sigma) in kbit/s per user, users in sorted key order."""
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
    if not isinstance(rows, dict) or not rows:
        raise ValueError(f"{path}: expected a JSON object of users -> {{down_u, down_sigma, up_u, up_sigma}}")
    users = []
    for key in sorted(rows):
        r = rows[key]
        down, up = float(r["down_u"]), float(r["up_u"])
        if down > 0 and up > 0:
            users.append((down, max(0.0, float(r.get("down_sigma", 0.0))), up, max(0.0, float(r.get("up_sigma", 0.0)))))
    if not users:
        raise ValueError(f"{path}: no user with positive down_u and up_u")
    return tuple(users)


def score_factor(scores: tuple[float, ...], u: float) -> float:
    """score / median(scores) of the entry that uniform `u` in [0, 1) picks."""
    return scores[int(u * len(scores))] / float(np.median(scores))


def lognormal_sigma(mean: float, sd: float) -> float:
    """ln-sd s of the lognormal with this mean and standard deviation: s² = ln(1 + (sd/mean)²)."""
    return math.sqrt(math.log1p((sd / mean) ** 2)) if mean > 0 and sd > 0 else 0.0


def link_variation(seed: int, device: int, round_key: int, down_sigma_ln: float, up_sigma_ln: float) -> tuple[float, float]:
    """This round's (down, up) rate factors of a trace-driven link: mean-1 lognormals, one shared z."""
    if down_sigma_ln <= 0 and up_sigma_ln <= 0:
        return 1.0, 1.0
    z = stream(seed, Purpose.LINK_VARIATION, device, round_key).standard_normal()
    return (math.exp(down_sigma_ln * z - down_sigma_ln ** 2 / 2), math.exp(up_sigma_ln * z - up_sigma_ln ** 2 / 2))
