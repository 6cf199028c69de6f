"""A device: its profile and link, its availability process, and its part in a round
(download, compute, upload), which a failure or going offline can cut short."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol

import simpy
from simpy.events import Process
from simpy.exceptions import Interrupt

from simfed.sim.availability import Timeline
from simfed.sim.cost import compute_seconds
from simfed.sim.events import Phase, SimEvent
from simfed.sim.fleet import DeviceProfile
from simfed.sim.network import Link, ServerSide, SharedTransfer, Transfer
from simfed.sim.workload import RoundCost, Workload

Emit = Callable[[SimEvent], None]


class RoundPort(Protocol):
    """What a device sees of the server's current round."""

    index: int
    closed_at: float | None

    def deliver(self, device: int) -> bool:
        """Hand in an update; False if the server will not use it (late or too stale)."""
        ...

    def rejected(self, device: int, now: float, wasted_bytes: int, wasted_energy_j: float) -> SimEvent:
        """The event of the server refusing the update `deliver` returned False for."""
        ...


class Device:
    """One device in the world. It starts its availability process on creation; the server
    calls `join` to make it take part in a round. `on_ready` is called whenever it becomes
    online and idle, so a waiting server can look again."""

    def __init__(self, env: simpy.Environment, profile: DeviceProfile, timeline: Timeline,
                 on_ready: Callable[[], None], server: ServerSide | None = None):
        self.env = env
        self.profile = profile
        self.id = profile.device_id
        self.link = Link.of(env, profile, server)
        self.online = False
        self.busy = False  # working on a round, possibly one that has closed (a straggler)
        self.work: Process | None = None  # the round being worked on
        self._on_ready = on_ready
        env.process(availability(env, self, timeline))

    @property
    def ready(self) -> bool:
        return self.online and not self.busy

    def set_online(self, online: bool) -> None:
        if online == self.online:
            return
        self.online = online
        if online and not self.busy:
            self._on_ready()
        if not online and self.work is not None and self.work.is_alive:
            self.work.interrupt("offline")

    def join(self, rnd: RoundPort, cost: RoundCost, slowdown: float, fail_after_s: float,
             workload: Workload, emit: Emit) -> None:
        """Take part in `rnd`: work through it unless the device fails `fail_after_s` into it."""
        assert self.ready, f"device {self.id} joined round {rnd.index} while offline or busy"
        self.busy = True
        self.work = self.env.process(device_round(self.env, self, rnd, cost, slowdown, workload, emit))
        if math.isfinite(fail_after_s):
            self.env.process(failure(self.env, self.work, fail_after_s))

    def release(self) -> None:
        self.busy, self.work = False, None
        if self.online:
            self._on_ready()


def availability(env: simpy.Environment, device: Device, timeline: Timeline):
    """The device comes and goes as its timeline says."""
    for online, duration_s in timeline.periods():
        device.set_online(online)
        if math.isinf(duration_s):
            return
        yield env.timeout(duration_s)


def failure(env: simpy.Environment, work: Process, after_s: float):
    """The device fails `after_s` into its round, if the round's work is still going."""
    yield env.timeout(after_s)
    if work.is_alive:
        work.interrupt("hazard")


@dataclass
class Spend:
    """What a device has spent in one round so far, and the step it is in."""

    bytes: int = 0
    compute_s: float = 0.0
    energy_j: float = 0.0
    phase: Phase = "download"
    phase_start: float = 0.0
    planned_s: float = 0.0
    planned: float = 0.0  # bytes or FLOPs of the current step
    transfer: Transfer | SharedTransfer | None = None  # the current transfer, if a transfer step


def device_round(env: simpy.Environment, device: Device, rnd: RoundPort, cost: RoundCost,
                 slowdown: float, workload: Workload, emit: Emit):
    """Download the server's payload, train locally, upload the update, hand it in."""
    d, r, link, profile = device.id, rnd.index, device.link, device.profile
    spend = Spend()

    def begin(phase: Phase, planned_s: float, planned: float) -> None:
        spend.phase, spend.phase_start, spend.planned_s, spend.planned = phase, env.now, planned_s, planned

    try:
        begin("download", link.seconds("down", cost.download_bytes), cost.download_bytes)
        emit(SimEvent(env.now, "download_start", r, d, planned_bytes=cost.download_bytes, planned_s=spend.planned_s))
        workload.on_download(d, r)
        spend.transfer = link.transfer("down", cost.download_bytes)
        yield spend.transfer
        energy = link.energy_j("down", cost.download_bytes)
        spend.bytes += cost.download_bytes
        spend.energy_j += energy
        emit(SimEvent(env.now, "download_end", r, d, bytes=cost.download_bytes, seconds=spend.transfer.seconds,
                      energy_j=energy))

        begin("compute", compute_seconds(cost.flops, profile.flops_per_s, slowdown), cost.flops)
        emit(SimEvent(env.now, "compute_start", r, d, planned_flops=cost.flops, planned_s=spend.planned_s))
        yield env.timeout(spend.planned_s)
        energy = cost.flops * profile.joules_per_flop
        spend.compute_s += spend.planned_s
        spend.energy_j += energy
        workload.on_compute_done(d, r)  # the real training; takes host time, no sim time
        emit(SimEvent(env.now, "compute_end", r, d, flops=cost.flops, seconds=spend.planned_s, energy_j=energy))

        begin("upload", link.seconds("up", cost.upload_bytes), cost.upload_bytes)
        emit(SimEvent(env.now, "upload_start", r, d, planned_bytes=cost.upload_bytes, planned_s=spend.planned_s))
        spend.transfer = link.transfer("up", cost.upload_bytes)
        yield spend.transfer
        upload_energy = link.energy_j("up", cost.upload_bytes)
        emit(SimEvent(env.now, "upload_end", r, d, bytes=cost.upload_bytes, seconds=spend.transfer.seconds,
                      energy_j=upload_energy))
    except Interrupt as cut:
        emit(dropped_event(env.now, r, device, spend, str(cut.cause)))
        device.release()
        return
    device.release()
    if not rnd.deliver(d):
        emit(rnd.rejected(d, env.now, cost.upload_bytes, upload_energy))


def dropped_event(now: float, r: int, device: Device, spend: Spend, reason: str) -> SimEvent:
    """The `dropped` event: the cut part of the current step, and the round's whole spend."""
    elapsed = now - spend.phase_start
    moved, flops, energy = 0, None, 0.0
    if spend.phase == "compute":
        fraction = elapsed / spend.planned_s if spend.planned_s > 0 else 1.0
        flops = spend.planned * fraction
        energy = flops * device.profile.joules_per_flop
    else:
        direction = "down" if spend.phase == "download" else "up"
        moved = spend.transfer.cancel()
        energy = device.link.energy_j(direction, moved)
    return SimEvent(
        now, "dropped", r, device.id, phase=spend.phase, reason=reason,
        bytes=None if spend.phase == "compute" else moved, flops=flops, seconds=elapsed, energy_j=energy,
        wasted_bytes=spend.bytes + moved,
        wasted_compute_s=spend.compute_s + (elapsed if spend.phase == "compute" else 0.0),
        wasted_energy_j=spend.energy_j + energy,
    )
