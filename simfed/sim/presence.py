"""Presence: who in the fleet is online and who is busy, for every device at once.

A device's availability is a lazy timeline (availability.py). Instead of one SimPy process a
device, the fleet keeps three arrays — online, busy, and the sim time its current period ends —
and advances a device's timeline only when somebody asks about a time past that end: the server
at a round's start (to find the online and idle devices and count them), and a device's own
watch while it works for a round (going offline cuts its work). A registered device that is
never selected costs these array slots and its timeline's iterator (none once it reaches a
period that lasts forever, as an always-on device does at once).

The state at time t is that of the period containing t, periods being [start, end): a period
that ends at t is over at t. Period ends are accumulated exactly as the per-device processes
did (end = previous end + duration), so event times do not move by a rounding error.
"""
from __future__ import annotations

import math
from typing import Iterable, Iterator

import numpy as np

from simfed.sim.availability import Period, Timeline


class Presence:
    """The availability and busy state of devices 0..n-1."""

    def __init__(self, timelines: Iterable[Timeline], n: int):
        self.online = np.zeros(n, dtype=bool)
        self.busy = np.zeros(n, dtype=bool)  # working for a round (possibly a closed one: a straggler)
        self.until = np.zeros(n)  # sim time the device's current period ends, seconds; inf: never
        self.held = np.zeros(n)  # offline until this sim time whatever its timeline says (recovery after a dropout)
        self._periods: list[Iterator[Period] | None] = [timeline.periods() for timeline in timelines]
        if len(self._periods) != n:
            raise ValueError(f"expected {n} timelines, got {len(self._periods)}")
        self.advance(0.0)

    def advance(self, t: float) -> None:
        """Bring every device whose period ended by `t` into the period that contains `t`."""
        for d in np.flatnonzero(self.until <= t).tolist():
            self.advance_one(d, t)

    def advance_one(self, d: int, t: float) -> None:
        until = float(self.until[d])
        if until > t:
            return
        periods = self._periods[d]
        while until <= t:
            online, duration_s = next(periods)
            until += duration_s
        self.online[d], self.until[d] = online, until
        if math.isinf(until):
            self._periods[d] = None  # nothing more to draw: free the iterator and its random stream

    def ready(self, t: float) -> np.ndarray:
        """Mask of the devices online and idle at `t`."""
        self.advance(t)
        return self.online & ~self.busy & (self.held <= t)

    def next_online_s(self, t: float = 0.0) -> float:
        """The earliest time a device now offline comes online, or a recovering one's hold ends
        (inf if none ever will). At a hold's end the device may still be offline: a waiting
        server then looks again and waits on."""
        offline = ~self.online
        first = float(self.until[offline].min()) if offline.any() else math.inf
        holding = self.held > t
        return min(first, float(self.held[holding].min())) if holding.any() else first
