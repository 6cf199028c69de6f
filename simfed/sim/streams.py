"""Common random numbers: one independent stream per (scenario seed, purpose, device, round).

A draw never depends on the order in which events happen, so two methods with different payload
sizes face the same devices, availability timelines, dropout draws and noise. No global seeding.
"""
from __future__ import annotations

from enum import IntEnum

import numpy as np


class Purpose(IntEnum):
    """What a stream is for; the value is part of the seed, so never renumber."""

    FLEET = 1  # a device's drawn profile (FLOP/s, link speed, memory)
    AVAILABILITY = 2  # a device's on/off timeline
    DROPOUT = 3  # a device's failure time in a round
    COMPUTE_NOISE = 4  # a device's run-to-run compute slowdown in a round
    SELECTION = 5  # the server's random order of devices in a round
    LINK_VARIATION = 6  # a trace-driven link's within-user rate variation in a round
    TRACE_CLIENTS = 7  # the permutation of a trace's clients handed to devices (trace clients: distinct)
    RECOVERY = 8  # a device's time offline after a hazard dropout, per round (dropout.recovery)
    UPLINK_SPREAD = 9  # a device's own uplink spread draw (link_spread_correlation < 1)


def stream(seed: int, purpose: Purpose, *keys: int) -> np.random.Generator:
    """The generator for `purpose` under `seed`, keyed by e.g. (device,) or (device, round)."""
    if seed < 0 or any(k < 0 for k in keys):
        raise ValueError(f"seed and keys must be non-negative, got seed={seed}, keys={keys}")
    return np.random.default_rng([int(seed), int(purpose), *map(int, keys)])
