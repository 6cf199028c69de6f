"""Availability timelines: when a device is online (idle, charging, unmetered) and may train.

A timeline is a lazy sequence of (online, duration_s) periods from sim time 0, drawn from the
device's own stream (seed, AVAILABILITY, device) in order, so it is the same whatever runs on it
and however far the run gets. Kinds: always-on, two-state Markov, trace replay.
"""
from __future__ import annotations

import itertools
import json
import math
from functools import lru_cache
from typing import Iterator, Protocol

from simfed.sim.spec import AlwaysOnSpec, AvailabilitySpec, MarkovSpec, TraceSpec
from simfed.sim.streams import Purpose, stream

Period = tuple[bool, float]  # (online, duration in seconds); the last may last math.inf


class Timeline(Protocol):
    def periods(self) -> Iterator[Period]:
        """Consecutive periods from sim time 0."""
        ...


class AlwaysOn:
    def periods(self) -> Iterator[Period]:
        yield True, math.inf


class MarkovOnOff:
    """Two-state chain, exponential durations; starts in its stationary distribution (by
    memorylessness the first period is then a full exponential draw too)."""

    def __init__(self, spec: MarkovSpec, seed: int, device: int):
        self.mean_on_s, self.mean_off_s = spec.mean_on_s, spec.mean_off_s
        self.seed, self.device = seed, device

    def periods(self) -> Iterator[Period]:
        rng = stream(self.seed, Purpose.AVAILABILITY, self.device)
        online = bool(rng.random() < self.mean_on_s / (self.mean_on_s + self.mean_off_s))
        while True:
            yield online, float(rng.exponential(self.mean_on_s if online else self.mean_off_s))
            online = not online


class TraceReplay:
    """One client of a recorded trace, shifted to start at 0 and repeated with its length."""

    def __init__(self, spec: TraceSpec, seed: int, device: int):
        clients = _read_trace(spec.path)
        if not clients:
            raise ValueError(f"availability trace {spec.path!r} holds no clients")
        pick = int(stream(seed, Purpose.AVAILABILITY, device).integers(len(clients)))
        self.period_s, self.ready = clients[pick]
        self.offset_s = spec.offset_s

    def periods(self) -> Iterator[Period]:
        if not self.ready:
            yield False, math.inf
            return
        t = 0.0  # sim time reached
        for cycle in itertools.count():
            shift = cycle * self.period_s - self.offset_s
            for start, end in self.ready:
                start, end = start + shift, end + shift
                if end <= t:
                    continue
                if start > t:
                    yield False, start - t
                start = max(start, t)
                yield True, end - start
                t = end


@lru_cache(maxsize=8)
def _read_trace(path: str) -> tuple[tuple[float, tuple[tuple[float, float], ...]], ...]:
    """Clients of a FLASH-format trace (sorted by key): (length_s, merged ready periods in [0, length))."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    clients = []
    for key in sorted(raw, key=lambda k: (len(k), k)):
        entry = raw[key]
        if not entry.get("isSuccess", True) or entry.get("trace_start") is None or entry.get("trace_end") is None:
            continue  # FLASH marks clients it could not record
        begin, length = float(entry["trace_start"]), float(entry["trace_end"]) - float(entry["trace_start"])
        if length <= 0:
            continue
        spans = sorted((max(0.0, s - begin), min(length, e - begin)) for s, e in entry.get("ready_time", []))
        merged: list[tuple[float, float]] = []
        for s, e in spans:
            if e <= s:
                continue
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        clients.append((length, tuple(merged)))
    return tuple(clients)


def timeline(spec: AvailabilitySpec, seed: int, device: int) -> Timeline:
    """The timeline of `device` under `spec`."""
    if isinstance(spec, AlwaysOnSpec):
        return AlwaysOn()
    if isinstance(spec, MarkovSpec):
        return MarkovOnOff(spec, seed, device)
    return TraceReplay(spec, seed, device)
