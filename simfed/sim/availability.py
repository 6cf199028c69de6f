"""Availability timelines: when a device is online (idle, charging, unmetered) and may train.

A timeline is a lazy sequence of (online, duration_s) periods from sim time 0, drawn from the
device's own stream (seed, AVAILABILITY, device) in order, so it is the same whatever runs on it
and however far the run gets. Kinds: always-on, two-state Markov, trace replay, diurnal.

Diurnal construction. A device alternates online periods, whose lengths are Weibull(k, lambda)
whatever the hour, and offline periods, which end at a rate r(h) per second that depends only on
the hour of day h (an inhomogeneous exponential clock: "off-period lengths chosen per hour").
For a periodic steady state, the probability of being online at clock time t is

    on(t) = integral over u >= 0 of  start(t - u) * S(u) du,   start(t) = r(h(t)) * (1 - on(t)),

with S the Weibull survival function: online periods started earlier and not yet over. The 24
rates are solved numerically (`diurnal_fit`: five-minute bins over a day, the lag kernel folded
onto the day, a linear solve for the starts given the rates, then multiplicative updates of each
hour's odds) so that the mean of on(t) over hour h equals the profile's fraction f(h). For a
constant profile this reduces to the renewal formula f / (1 - f) = r * E[online length]. Since
online periods last hours (FLASH: mean 2.7 h), a sharp profile may be out of reach; the solver
then gets as close as positive rates allow. A timeline starts offline ten days before sim time 0
and runs forward, so at time 0 it is in the periodic steady state.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Iterator, Protocol

import numpy as np
import yaml

from simfed.sim.spec import AlwaysOnSpec, AvailabilitySpec, DiurnalSpec, MarkovSpec, TraceSpec
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
    """One client of a recorded trace (see `TraceSpec`): on the trace's common clock, folded by
    whole days into the client's window, or (clock: own) shifted to start at 0 and repeated with
    its length. Both are one loop: spans relative to a cycle's start, a cycle length, and how far
    into its cycle the client is at sim time 0."""

    def __init__(self, spec: TraceSpec, seed: int, device: int):
        trace = read_trace(spec.path)
        clients = trace.clients
        if not clients:
            raise ValueError(f"availability trace {spec.path!r} holds no clients")
        self.client = trace_client(spec, seed, device, len(clients))
        begin, length, ready = clients[self.client]
        if spec.clock == "own":
            self.period_s, self.ready, self.offset_s = length, ready, spec.offset_s
            return
        self.period_s = max(1.0, math.floor(length / DAY_S)) * DAY_S  # whole days: the hours stay put
        self.ready = tuple((s, min(e, self.period_s)) for s, e in ready if s < self.period_s)
        self.offset_s = (common_origin(trace, spec) - begin) % self.period_s

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


def trace_client(spec: TraceSpec, seed: int, device: int, n_clients: int) -> int:
    """Which client of the trace `device` replays. independent: a uniform draw from the device's
    own stream (devices may share a client). distinct: device d takes entry d mod n of a random
    permutation of the n clients, a fresh permutation for each block of n device ids, so no two
    devices share a client while the fleet is no larger than the trace."""
    if spec.clients == "independent":
        return int(stream(seed, Purpose.AVAILABILITY, device).integers(n_clients))
    block, index = divmod(device, n_clients)
    return int(stream(seed, Purpose.TRACE_CLIENTS, block).permutation(n_clients)[index])


def common_origin(trace: "Trace", spec: TraceSpec) -> float:
    """T0, the trace time at sim time 0 on the common clock: the trace's earliest start plus
    offset_s, moved on to the next `start_hour` o'clock of the trace's clock if one is given."""
    origin = trace.earliest_start_s + spec.offset_s
    if spec.start_hour is None:
        return origin
    return origin + (spec.start_hour * HOUR_S - origin) % DAY_S


Client = tuple[float, float, tuple[tuple[float, float], ...]]  # (trace_start, length_s, ready spans in [0, length))


@dataclass(frozen=True)
class Trace:
    """The usable clients of a FLASH-format trace file, in file-key order."""

    clients: tuple[Client, ...]

    @property
    def earliest_start_s(self) -> float:
        return min(begin for begin, _, _ in self.clients)

    def online_share_by_hour(self, step_s: float = 60.0) -> np.ndarray:
        """Per hour of the trace's clock (timestamp mod 1 day): the share of the clients inside
        their recorded window that are ready, sampled every `step_s` over every window."""
        online, total = np.zeros(24), np.zeros(24)
        for begin, length, spans in self.clients:
            t = np.arange(step_s / 2, length, step_s)
            ready = np.zeros(len(t), dtype=bool)
            for s, e in spans:
                ready[np.searchsorted(t, s):np.searchsorted(t, e)] = True
            hour = (((begin + t) % DAY_S) // HOUR_S).astype(int)
            np.add.at(online, hour, ready)
            np.add.at(total, hour, 1)
        return online / np.maximum(total, 1)


@lru_cache(maxsize=8)
def read_trace(path: str) -> Trace:
    """Clients of a FLASH-format trace (sorted by key), each with its merged ready periods."""
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
        clients.append((begin, length, tuple(merged)))
    return Trace(tuple(clients))


def _read_trace(path: str) -> tuple[tuple[float, tuple[tuple[float, float], ...]], ...]:
    """(length_s, ready spans) per client: the own-clock view, for older callers."""
    return tuple((length, spans) for _, length, spans in read_trace(path).clients)


HOUR_S = 3600.0
DAY_S = 86400.0
SOLVER_BIN_S = 300.0  # time step of the rate solver, seconds (5 min)
BURN_IN_S = 10 * DAY_S  # a diurnal timeline starts this long before sim time 0


@lru_cache(maxsize=1)
def builtin_diurnal() -> dict:
    """The built-in FLASH profile (simfed/profiles/diurnal.yaml): hourly, weibull_shape, weibull_scale_s, source."""
    text = resources.files("simfed.profiles").joinpath("diurnal.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)["flash"]


def weibull_mean_s(shape: float, scale_s: float) -> float:
    return scale_s * math.gamma(1.0 + 1.0 / shape)


def _lag_kernel(shape: float, scale_s: float, bins: int) -> np.ndarray:
    """c[m]: the online time in a bin, per unit of starts spread evenly over the bin m bins earlier,
    as a fraction of the bin, folded onto one day of `bins` bins. With I2 the second integral of
    the survival S: c[m] = (I2((m+1)dt) - 2 I2(m dt) + I2((m-1)dt)) / dt^2, I2(<0) = 0."""
    dt = DAY_S / bins
    horizon = min(scale_s * 40.0 ** (1.0 / shape), 60 * DAY_S)  # S(horizon) = e^-40
    lags = int(math.ceil(horizon / dt)) + 2
    fine = max(20, math.ceil(dt / (scale_s / 1000)))  # trapezoid steps per bin: S is steep near 0 when shape < 1
    fine = max(1, min(fine, int(4e6 / lags)))
    u = np.arange(lags * fine + 1) * (dt / fine)
    survival = np.exp(-((u / scale_s) ** shape))
    step = dt / fine
    i1 = np.concatenate([[0.0], np.cumsum((survival[1:] + survival[:-1]) * step / 2)])
    i2 = np.concatenate([[0.0], np.cumsum((i1[1:] + i1[:-1]) * step / 2)])[::fine]  # at multiples of dt
    padded = np.concatenate([[0.0], i2])  # padded[m] = I2((m - 1) dt)
    c = (padded[2:] - 2 * padded[1:-1] + padded[:-2]) / dt**2  # m = 0 .. lags - 1
    folded = np.zeros(bins)
    np.add.at(folded, np.arange(len(c)) % bins, c)
    return folded


def _starts(hazard: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Solve starts = hazard * (1 - kernel (*) starts), (*) circular convolution over the day.
    A fixed-point iteration with FFTs when it contracts (every realistic profile: it does when
    the odds of being online stay below ~0.9); a dense solve otherwise. (A dense solve in every
    call would be as exact, but multithreaded BLAS on a busy host makes it 100x slower.)"""
    bins = len(kernel)
    spectrum = np.fft.rfft(kernel)
    if hazard.max() * kernel.sum() < 0.9:
        starts = hazard.copy()
        for _ in range(2000):
            new = hazard * (1 - np.fft.irfft(spectrum * np.fft.rfft(starts), bins))
            if np.max(np.abs(new - starts)) <= 1e-15 * np.max(np.abs(new)):
                return new
            starts = new
    index = np.arange(bins)
    lagged = kernel[(index[:, None] - index[None, :]) % bins]
    return np.linalg.solve(np.eye(bins) + hazard[:, None] * lagged, hazard)


def diurnal_fractions(rates: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Steady-state mean fraction online in each hour, given the hourly rates (1/s) of coming online."""
    bins = len(kernel)
    hazard = np.repeat(rates, bins // 24) * (DAY_S / bins)  # probability per bin of an offline device coming online
    starts = _starts(hazard, kernel)
    online = np.fft.irfft(np.fft.rfft(kernel) * np.fft.rfft(starts), bins)
    return online.reshape(24, -1).mean(axis=1)


@dataclass(frozen=True)
class DiurnalFit:
    rates: tuple[float, ...]  # per hour of day, 1/s: rate at which an offline device comes online
    achieved: tuple[float, ...]  # steady-state fraction online in each hour (= the target where reachable)


@lru_cache(maxsize=16)
def diurnal_fit(hourly: tuple[float, ...], shape: float, scale_s: float) -> DiurnalFit:
    """Per-hour rates at which an offline device comes online, so that the steady state is online a
    fraction hourly[h] of hour h (see the module's docstring). An hour the profile drops into
    faster than online periods can end gets rate ~0 and stays above its target."""
    target = np.asarray(hourly, dtype=float)
    kernel = _lag_kernel(shape, scale_s, int(DAY_S / SOLVER_BIN_S))
    odds = target / (1 - target)
    rates = odds / weibull_mean_s(shape, scale_s)  # exact for a flat profile
    got = diurnal_fractions(rates, kernel)
    for _ in range(500):
        unreachable = (rates == 0) & (got > target)
        if np.all((np.abs(got - target) < 1e-10) | unreachable):
            break
        rates = rates * odds / (got / (1 - got))
        rates[rates < 1e-6 * rates.max()] = 0.0  # an hour the profile cannot reach: no arrivals at all
        previous, got = got, diurnal_fractions(rates, kernel)
        if np.max(np.abs(got - previous)) < 1e-12:
            break
    return DiurnalFit(tuple(float(r) for r in rates), tuple(float(f) for f in got))


class Diurnal:
    """Weibull online periods; offline periods end at the hour's rate from `diurnal_fit`."""

    def __init__(self, spec: DiurnalSpec, seed: int, device: int):
        hourly = spec.hourly if spec.hourly is not None else builtin_diurnal()["hourly"]
        self.fit = diurnal_fit(tuple(float(f) for f in hourly), spec.weibull_shape, spec.weibull_scale_s)
        self.rates = self.fit.rates
        self.shape, self.scale_s = spec.weibull_shape, spec.weibull_scale_s
        self.clock0_s = spec.start_hour * HOUR_S  # clock time of day at sim time 0
        self.cumulative = np.concatenate([[0.0], np.cumsum(self.rates) * HOUR_S])  # hazard at each hour's start
        self.seed, self.device = seed, device

    def offline_s(self, clock_s: float, exposure: float) -> float:
        """Length of an offline period starting at `clock_s` (time of day) that ends when the
        hourly hazard integrated from there reaches `exposure` (an Exp(1) draw)."""
        rates, cumulative = self.rates, self.cumulative
        hour = int(clock_s // HOUR_S)
        target = cumulative[hour] + rates[hour] * (clock_s - hour * HOUR_S) + exposure
        days, rest = divmod(target, cumulative[-1])
        end_hour = min(23, int(np.searchsorted(cumulative, rest, side="right")) - 1)
        end_clock = end_hour * HOUR_S + (rest - cumulative[end_hour]) / rates[end_hour]
        return days * DAY_S + end_clock - clock_s

    def periods(self) -> Iterator[Period]:
        rng = stream(self.seed, Purpose.AVAILABILITY, self.device)
        t, online = -BURN_IN_S, False
        while True:
            if online:
                duration = self.scale_s * float(rng.weibull(self.shape))
            else:
                duration = self.offline_s((self.clock0_s + t) % DAY_S, float(rng.exponential()))
            end = t + duration
            if end > 0:
                yield online, end - max(t, 0.0)
            t, online = end, not online


def timeline(spec: AvailabilitySpec, seed: int, device: int) -> Timeline:
    """The timeline of `device` under `spec`."""
    if isinstance(spec, AlwaysOnSpec):
        return AlwaysOn()
    if isinstance(spec, MarkovSpec):
        return MarkovOnOff(spec, seed, device)
    if isinstance(spec, DiurnalSpec):
        return Diurnal(spec, seed, device)
    return TraceReplay(spec, seed, device)
