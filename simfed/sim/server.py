"""The server's round policies: synchronous rounds (`server`) and buffered asynchronous
aggregation (`async_server`: FedBuff, FedAsync).

Synchronous. Each round it picks ceil(over_selection * target) devices uniformly at random among those online
and idle (fewer if fewer are; if none, it waits until one is), and closes the round at the
`target`-th update or `deadline_s` after the start, whichever comes first. If it picked fewer
than `target`, it closes as soon as all of those have reported. Updates arriving after the close
are stragglers: ignored (under late_reports: refuse one that reaches its upload after the close is
told no at check-in and sends nothing). The next round starts at the close. The server does not
observe dropouts: a round whose devices vanish waits for its deadline. With a selection window it
first waits, up to the window, for enough devices to check in; a round that closes with fewer than
min_reports reports is abandoned (nothing merged, not counted). Before merging, the workload may
refuse reports whose update is not finite (`screened`: a `diverged` event each).

Asynchronous (Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation",
AISTATS 2022; Xie et al., "Asynchronous Federated Optimization", 2019). The server keeps
`concurrency` devices working: whenever fewer are busy and some are online and idle, it picks
among those uniformly at random. A device downloads the current model version v0; when its update
arrives at version v, its staleness is s = v - v0. If s > max_staleness it is dropped (`stale`);
otherwise it joins the buffer with weight 1/sqrt(1 + s). Every `buffer_size` K accepted arrivals
(K = 1 for FedAsync) the server merges the buffer and the version goes up by one; that is a
"round" here (round_start when a version becomes current, aggregated + round_end when it is
merged). A device whose update waits in the buffer is not picked again until the merge, so every
device appears at most once per aggregation. Device events carry the version the device
downloaded as their `round`. The per-device draws (dropout, compute noise) are keyed by the
device's job count (its 0th, 1st, ... participation) instead of the round. With a
client_timeout_s a cut device's slot stays taken until that long after its dispatch.
"""
from __future__ import annotations

import math
import numpy as np
import simpy

from simfed.sim.cost import compute_slowdown, failure_after_s, recovery_seconds
from simfed.sim.device_data import link_variation
from simfed.sim.device import Devices, Emit, timeout_at
from simfed.sim.events import SimEvent
from simfed.sim.spec import WorldSpec
from simfed.sim.streams import Purpose, stream
from simfed.sim.workload import Workload


class Doorbell:
    """Rung by devices that become online and idle; the server waits on it when nobody is."""

    def __init__(self, env: simpy.Environment):
        self.env = env
        self._event = env.event()

    def wait(self) -> simpy.Event:
        return self._event

    def ring(self) -> None:
        if self._event.callbacks:  # somebody waits; otherwise ringing would only add events
            self._event.succeed()
            self._event = self.env.event()


class Round:
    """One round as the devices see it: where they hand in their updates."""

    def __init__(self, env: simpy.Environment, index: int, quorum: int):
        self.env = env
        self.index = index
        self.started_at = env.now
        self.quorum = quorum  # updates that close the round early
        self.reports: list[int] = []  # devices whose update arrived in time, in arrival order
        self.quorum_reached = env.event()
        self.closed_at: float | None = None

    def deliver(self, device: int) -> bool:
        if self.closed_at is not None:
            return False
        self.reports.append(device)
        if len(self.reports) == self.quorum:
            self.close()
            self.quorum_reached.succeed()
        return True

    def close(self) -> None:
        if self.closed_at is None:
            self.closed_at = self.env.now

    def rejected(self, device: int, now: float, wasted_bytes: int, wasted_energy_j: float,
                 wasted_compute_s: float = 0.0) -> SimEvent:
        """A straggler: the device keeps its local training; its upload was for nothing, and so
        was the part of its training the method's next download overwrites (device.overwritten)."""
        assert self.closed_at is not None
        return SimEvent(now, "straggler", self.index, device, late_s=now - self.closed_at, wasted_bytes=wasted_bytes,
                        wasted_compute_s=wasted_compute_s, wasted_energy_j=wasted_energy_j)


def recovery_mean(world: WorldSpec) -> float:
    """Mean of the exponential recovery drawn for a device (0: none); see DropoutSpec.recovery."""
    return 0.0 if world.dropout.recovery == "none" else world.dropout.recovery_mean_s


def selection_size(over_selection: float, target: int) -> int:
    """ceil(over_selection * target), immune to 1.3 * 10 = 13.000000000000002."""
    return math.ceil(round(over_selection * target, 9))


def choose(ready: np.ndarray, k: int, seed: int, round_index: int) -> list[int]:
    """`k` of the devices in the `ready` mask uniformly at random, as sorted ids. Every device gets
    a random rank from the (seed, SELECTION, round) stream whoever is ready, so methods whose
    rounds find different devices busy still share the luck of the draw; the pick is the `k`
    ready devices of lowest rank (walked in rank order: no sort over the fleet)."""
    n = len(ready)
    rank = stream(seed, Purpose.SELECTION, round_index).permutation(n)
    by_rank = np.empty(n, dtype=np.int64)
    by_rank[rank] = np.arange(n)  # device ids in increasing rank
    return sorted(by_rank[ready[by_rank]][:k].tolist())


def screened(workload: Workload, devices: Devices, round_index: int, reports: list[int], now: float,
             emit: Emit) -> list[int]:
    """The reports the server merges: those the workload's `screen` does not refuse (a non-finite
    update, found when the learning side computes it). Each refused one is a `diverged` event whose
    waste is that device's whole round. A workload without `screen` refuses nothing."""
    screen = getattr(workload, "screen", None)
    refused = set(screen(round_index, list(reports))) if screen is not None and reports else set()
    for d in sorted(refused):
        spent_bytes, compute_s, energy_j = devices.delivered.get(d, (0, 0.0, 0.0))
        emit(SimEvent(now, "diverged", round_index, d, reason="non_finite", wasted_bytes=spent_bytes,
                      wasted_compute_s=compute_s, wasted_energy_j=energy_j))
    return [d for d in reports if d not in refused]


def merge_cost(workload: Workload, flops_per_s: float, devices: list[int]) -> tuple[float, float]:
    """(FLOPs, seconds) of the server's merge of `devices`' updates: the workload's
    `aggregation_flops` (none: a server with nothing to compute) over `server.flops_per_s`
    (0: instantaneous merges, the old model)."""
    count = getattr(workload, "aggregation_flops", None)
    if count is None or not devices or flops_per_s <= 0:
        return 0.0, 0.0
    flops = float(count(list(devices)))
    return flops, flops / flops_per_s


def server(env: simpy.Environment, world: WorldSpec, devices: Devices, doorbell: Doorbell,
           workload: Workload, seed: int, emit: Emit):
    """Run `world.server.rounds` synchronous rounds."""
    spec = world.server
    wanted = selection_size(spec.over_selection, spec.target_per_round)
    for r in range(spec.rounds):
        if spec.selection_window_s > 0:  # check-ins: wait for enough devices, up to the window
            window_end = env.now + spec.selection_window_s
            while np.count_nonzero(devices.ready()) < wanted and env.now < window_end:
                yield doorbell.wait() | devices.next_online() | timeout_at(env, window_end)
        while not (ready := devices.ready()).any():
            yield doorbell.wait() | devices.next_online()
        eligible = int(np.count_nonzero(ready))
        chosen = choose(ready, wanted, seed, r)
        rnd = Round(env, r, quorum=min(spec.target_per_round, len(chosen)))
        emit(SimEvent(env.now, "round_start", r, target=rnd.quorum, eligible=eligible, selected=len(chosen),
                      deadline_s=spec.deadline_s))
        for d in chosen:
            emit(SimEvent(env.now, "selected", r, d))
        for d in chosen:
            p = devices.profiles[d]
            devices.join(d, rnd, workload.cost(d, r), compute_slowdown(seed, d, r, world.compute_noise_sigma),
                         failure_after_s(seed, d, r, world.dropout.hazard_per_hour), workload, emit,
                         link_variation(seed, d, r, p.down_sigma_ln, p.up_sigma_ln),
                         recovery_seconds(seed, d, r, recovery_mean(world)))

        yield rnd.quorum_reached | env.timeout(spec.deadline_s)
        rnd.close()
        if len(rnd.reports) < spec.min_reports:  # too few to merge: abandoned, nothing changes
            emit(SimEvent(env.now, "round_end", r, reason="abandoned", aggregated=0, selected=len(chosen),
                          count=len(rnd.reports), duration_s=env.now - rnd.started_at))
            workload.on_round_end(r, env.now)
            continue
        merged = screened(workload, devices, r, sorted(rnd.reports), env.now, emit)
        flops, seconds = merge_cost(workload, spec.flops_per_s, merged)
        if seconds > 0:  # the merge itself: the next round's downloads wait for its result
            yield env.timeout(seconds)
        emit(SimEvent(env.now, "aggregated", r, devices=tuple(merged), count=len(merged),
                      flops=flops if seconds > 0 else None, seconds=seconds if seconds > 0 else None))
        workload.on_aggregate(r, merged)
        emit(SimEvent(env.now, "round_end", r, reason="target" if rnd.quorum_reached.triggered else "deadline",
                      aggregated=len(merged), selected=len(chosen), duration_s=env.now - rnd.started_at))
        workload.on_round_end(r, env.now)


def staleness_weight(staleness: int) -> float:
    """FedBuff's weight of an update `staleness` versions old: 1 / sqrt(1 + s)."""
    return 1.0 / math.sqrt(1.0 + staleness)


class Buffer:
    """The asynchronous server's state: the current model version and the updates waiting.

    A full buffer is merged at once, or, when the merge takes time (server.flops_per_s), it is set
    aside and merged that long later, one merge after the other; the version goes up when a merge
    ends, and arrivals meanwhile fill the next buffer (their staleness counts the versions
    published by then)."""

    def __init__(self, env: simpy.Environment, spec, workload: Workload, emit: Emit, devices: Devices | None = None,
                 doorbell: Doorbell | None = None):
        self.env, self.spec, self.workload, self.emit = env, spec, workload, emit
        self.devices = devices
        self.doorbell = doorbell  # rung when a merge set aside ends: a new version, its devices free again
        self.version = 0  # the current model version; it rises by one at every aggregation
        self.waiting: list[tuple[int, int]] = []  # (device, staleness) in arrival order
        self.merging: list[list[tuple[int, int]]] = []  # full buffers set aside for a merge under way
        self.busy_until = env.now  # when the server's merges set aside so far end
        self.selected = 0  # devices picked while the current version was current
        self.version_started = env.now
        self.done = env.event()  # fires when `spec.rounds` aggregations are done

    def held(self) -> list[int]:
        """Devices whose update waits for a merge: not picked again meanwhile."""
        return [d for batch in (self.waiting, *self.merging) for d, _ in batch]

    def arrive(self, device: int, downloaded: int) -> bool:
        if self.version + len(self.merging) >= self.spec.rounds:  # the last merge is under way
            return True
        staleness = self.version - downloaded
        if self.spec.max_staleness is not None and staleness > self.spec.max_staleness:
            return False
        self.waiting.append((device, staleness))
        if len(self.waiting) == self.spec.buffer:
            self.close_buffer()
        return True

    def close_buffer(self) -> None:
        """The buffer is full: screen it and merge it, now or once the server has computed the merge."""
        k, now = self.version + len(self.merging), self.env.now
        merged = sorted(self.waiting)
        self.waiting = []
        if self.devices is not None:
            kept = set(screened(self.workload, self.devices, k, [d for d, _ in merged], now, self.emit))
            merged = [(d, s) for d, s in merged if d in kept]
        flops, seconds = merge_cost(self.workload, self.spec.flops_per_s, [d for d, _ in merged])
        if seconds <= 0:
            self.aggregate(merged)
            return
        self.merging.append(merged)
        self.busy_until = max(now, self.busy_until) + seconds
        self.env.process(self._merge_at(self.busy_until, merged, flops, seconds))

    def _merge_at(self, t: float, merged: list[tuple[int, int]], flops: float, seconds: float):
        yield self.env.timeout(t - self.env.now)
        self.merging.pop(0)
        self.aggregate(merged, flops, seconds)
        if self.doorbell is not None:
            self.doorbell.ring()

    def aggregate(self, merged: list[tuple[int, int]], flops: float = 0.0, seconds: float = 0.0) -> None:
        k, now = self.version, self.env.now
        devices = [d for d, _ in merged]
        weights = [staleness_weight(s) for _, s in merged]
        self.emit(SimEvent(now, "aggregated", k, devices=tuple(devices), count=len(devices), weights=tuple(weights),
                           stalenesses=tuple(s for _, s in merged),
                           flops=flops if seconds > 0 else None, seconds=seconds if seconds > 0 else None))
        self.workload.on_aggregate(k, devices, weights)
        self.emit(SimEvent(now, "round_end", k, reason="buffer", aggregated=len(devices), selected=self.selected,
                           duration_s=now - self.version_started))
        self.workload.on_round_end(k, now)
        self.version += 1
        if self.version == self.spec.rounds:
            self.done.succeed()


class Ticket:
    """One device's job for the asynchronous server (the device's `RoundPort`)."""

    closed_at = None

    def __init__(self, buffer: Buffer, version: int):
        self.buffer, self.index = buffer, version

    def deliver(self, device: int) -> bool:
        if self.buffer.done.triggered:  # the run is over; the update is never merged
            return True
        return self.buffer.arrive(device, self.index)

    def rejected(self, device: int, now: float, wasted_bytes: int, wasted_energy_j: float,
                 wasted_compute_s: float = 0.0) -> SimEvent:
        """Too stale: dropped; it wastes what a straggler does."""
        return SimEvent(now, "stale", self.index, device, staleness=self.buffer.version - self.index,
                        wasted_bytes=wasted_bytes, wasted_compute_s=wasted_compute_s, wasted_energy_j=wasted_energy_j)


def async_server(env: simpy.Environment, world: WorldSpec, devices: Devices, doorbell: Doorbell,
                 workload: Workload, seed: int, emit: Emit):
    """Run `world.server.rounds` buffered asynchronous aggregations (FedBuff; FedAsync when K = 1)."""
    spec = world.server
    buffer = Buffer(env, spec, workload, emit, devices, doorbell)
    jobs: dict[int, int] = {}  # participations so far, per device that has had any: keys its random draws
    picks = 0  # devices picked so far: keys the selection stream
    announced = -1
    while not buffer.done.triggered:
        ready = devices.ready()
        if announced < buffer.version:
            announced = buffer.version
            buffer.selected, buffer.version_started = 0, env.now
            emit(SimEvent(env.now, "round_start", buffer.version, target=spec.buffer,
                          eligible=int(np.count_nonzero(ready))))
        free = spec.concurrency - devices.busy_count
        if free > 0:
            for d in buffer.held():  # an update waiting to be merged: not picked again meanwhile
                ready[d] = False
            for d in choose(ready, free, seed, picks) if ready.any() else []:
                picks += 1
                buffer.selected += 1
                emit(SimEvent(env.now, "selected", buffer.version, d))
                job = jobs.get(d, 0)
                jobs[d] = job + 1
                devices.join(d, Ticket(buffer, buffer.version), workload.cost(d, buffer.version),
                             compute_slowdown(seed, d, job, world.compute_noise_sigma),
                             failure_after_s(seed, d, job, world.dropout.hazard_per_hour), workload, emit,
                             link_variation(seed, d, job, devices.profiles[d].down_sigma_ln,
                                            devices.profiles[d].up_sigma_ln),
                             recovery_seconds(seed, d, job, recovery_mean(world)))
        wake = doorbell.wait() | buffer.done
        if devices.busy_count < spec.concurrency:  # a free slot: a device coming online is picked at once
            wake = wake | devices.next_online()
        yield wake
