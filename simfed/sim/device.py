"""Devices: the fleet as the server sees it (`Devices`), and a device's part in a round
(download, compute, upload), which a failure or going offline can cut short (`Device`)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

import simpy
from simpy.events import Process
from simpy.exceptions import Interrupt

from simfed.sim.cost import compute_seconds, throttled_seconds
from simfed.sim.energy import DeviceEnergy, EnergyModel
from simfed.sim.events import Phase, SimEvent
from simfed.sim.fleet import DeviceProfile
from simfed.sim.network import Link, ServerSide, SharedTransfer, Transfer
from simfed.sim.presence import Presence
from simfed.sim.workload import RoundCost, Workload

Emit = Callable[[SimEvent], None]


class RoundPort(Protocol):
    """What a device sees of the server's current round."""

    index: int
    closed_at: float | None

    def deliver(self, device: int) -> bool:
        """Hand in an update; False if the server will not use it (late or too stale)."""
        ...

    def rejected(self, device: int, now: float, wasted_bytes: int, wasted_energy_j: float,
                 wasted_compute_s: float = 0.0) -> SimEvent:
        """The event of the server refusing the update `deliver` returned False for."""
        ...


class Devices:
    """The fleet as the server sees it: every device's availability and busy state (`Presence`,
    a few bytes a device) and a `Device` actor only for the devices working for a round, made when
    one is picked and dropped when it is done. `on_ready` is called when a device becomes idle
    while online, so a waiting server can look again."""

    def __init__(self, env: simpy.Environment, profiles: Sequence[DeviceProfile], presence: Presence,
                 on_ready: Callable[[], None], server: ServerSide | None = None):
        self.env, self.profiles, self.presence = env, profiles, presence
        self.on_ready = on_ready
        self.server = server
        self.working: dict[int, Device] = {}  # device id -> its actor, while it works for a round
        self.delivered: dict[int, tuple[int, float, float]] = {}  # device -> (bytes, compute s, J) of its last delivered round
        self.excluded = np.zeros(len(profiles), dtype=bool)  # never selected (world.memory_policy: exclude)
        self.refuse_late = False  # server.late_reports: refuse (sync): a straggler checks in and is told no
        self.client_timeout_s: float | None = None  # server.client_timeout_s (async): a cut device's slot is held
        self.lost_slots = 0  # async: cut devices the server has not yet timed out
        self.energy_model: EnergyModel = "per_unit"  # world.energy_model (simfed/sim/energy.py)
        self.recovery_modes: list[str] = ["none"] * len(profiles)  # per device: next_period | exponential | none
        self.waste_by_method = False  # world.waste: by_method (RoundCost.kept_share decides what a kept training wastes)

    def __len__(self) -> int:
        return len(self.profiles)

    def ready(self) -> np.ndarray:
        """Mask of the devices online and idle now (and not excluded)."""
        return self.presence.ready(self.env.now) & ~self.excluded

    @property
    def busy_count(self) -> int:
        """Concurrency slots taken: devices working, and cut ones the server still waits for."""
        return len(self.working) + self.lost_slots

    def hold_slot(self, d: int, dispatched_at: float) -> float | None:
        """Device `d`, dispatched at `dispatched_at`, was cut: with a client timeout the server
        only frees its slot `client_timeout_s` after the dispatch (at once if that has passed).
        Returns how long from now the slot stays taken (None: no client timeout)."""
        if self.client_timeout_s is None:
            return None
        remaining = dispatched_at + self.client_timeout_s - self.env.now
        if remaining <= 0:
            return 0.0
        self.lost_slots += 1

        def timed_out(_event) -> None:
            self.lost_slots -= 1
            self.on_ready()

        self.env.timeout(remaining).callbacks.append(timed_out)
        return remaining

    def next_online(self) -> simpy.Event:
        """Fires when the first device now offline comes online (never, if none will)."""
        self.presence.advance(self.env.now)
        t = self.presence.next_online_s(self.env.now)
        return self.env.event() if math.isinf(t) else timeout_at(self.env, t)

    def join(self, d: int, rnd: RoundPort, cost: RoundCost, slowdown: float, fail_after_s: float,
             workload: Workload, emit: Emit, link_factors: tuple[float, float] = (1.0, 1.0),
             recovery_s: float = 0.0) -> None:
        """Device `d` takes part in `rnd`: it works through it unless it fails `fail_after_s` into it.
        `link_factors` scale its (down, up) rates for this round (a trace-driven link's variation)."""
        assert self.presence.online[d] and not self.presence.busy[d], \
            f"device {d} joined round {rnd.index} while offline or busy"
        device = self.working[d] = Device(self, self.profiles[d], link_factors)
        device.recovery_s = recovery_s
        self.presence.busy[d] = True
        device.join(rnd, cost, slowdown, fail_after_s, workload, emit)

    def release(self, d: int) -> None:
        del self.working[d]
        self.presence.busy[d] = False
        if self.presence.online[d] and self.presence.held[d] <= self.env.now:
            self.on_ready()
            return
        # cut by going offline (or recovering): its slot is free for the devices ready now, and a
        # server waiting for a free slot looks again when anyone comes online
        if self.ready().any():
            self.on_ready()
        self.next_online().callbacks.append(lambda _event: self.on_ready())


def timeout_at(env: simpy.Environment, t: float) -> simpy.Timeout:
    """A timeout that fires at exactly sim time `t` (now + (t - now) can miss `t` by a rounding)."""
    delay = t - env.now
    while env.now + delay < t:
        delay = math.nextafter(delay, math.inf)
    while delay > 0 and env.now + delay > t:
        delay = math.nextafter(delay, -math.inf)
    return env.timeout(delay)


class Device:
    """One device working for a round: its profile and link, the round's process, and a watch
    on its availability — going offline cuts the work."""

    def __init__(self, devices: Devices, profile: DeviceProfile, link_factors: tuple[float, float] = (1.0, 1.0)):
        self.env = devices.env
        self.devices = devices
        self.profile = profile
        self.id = profile.device_id
        self.link = Link.of(devices.env, profile, devices.server, link_factors)
        self.energy = DeviceEnergy(devices.energy_model, profile)
        self.work: Process | None = None  # the round being worked on
        self.recovery_s = 0.0  # offline this long after a hazard dropout (dropout.recovery_mean_s)
        self._watch: simpy.Event | None = None  # fires when the current availability period ends

    def join(self, rnd: RoundPort, cost: RoundCost, slowdown: float, fail_after_s: float,
             workload: Workload, emit: Emit) -> None:
        self.work = self.env.process(device_round(self.env, self, rnd, cost, slowdown, workload, emit))
        self._watch_period()
        if math.isfinite(fail_after_s):
            self.env.process(failure(self.env, self.work, fail_after_s))

    def _watch_period(self) -> None:
        until = float(self.devices.presence.until[self.id])
        if math.isfinite(until):
            watch = self._watch = timeout_at(self.env, until)
            watch.callbacks.append(self._period_ends)

    def _period_ends(self, event: simpy.Event) -> None:
        if event is not self._watch or self.work is None:
            return  # the device finished its round before this period ended
        presence = self.devices.presence
        presence.advance_one(self.id, self.env.now)
        if not presence.online[self.id]:
            if self.work.is_alive:
                self.work.interrupt("offline")
        else:
            self._watch_period()

    def release(self) -> None:
        self.work = self._watch = None
        self.devices.release(self.id)


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
    d, r, link, profile, power = device.id, rnd.index, device.link, device.profile, device.energy
    spend = Spend()
    dispatched_at = env.now

    def begin(phase: Phase, planned_s: float, planned: float) -> None:
        spend.phase, spend.phase_start, spend.planned_s, spend.planned = phase, env.now, planned_s, planned

    try:
        begin("download", link.seconds("down", cost.download_bytes), cost.download_bytes)
        emit(SimEvent(env.now, "download_start", r, d, planned_bytes=cost.download_bytes, planned_s=spend.planned_s))
        workload.on_download(d, r)
        spend.transfer = link.transfer("down", cost.download_bytes)
        yield spend.transfer
        compute_s = throttled_seconds(compute_seconds(cost.flops, profile.flops_per_s, slowdown, cost.activation_bytes,
                                                      profile.activation_bytes_per_s),
                                      profile.throttle_after_s, profile.throttle_factor)
        # the radio's tail runs on into the compute, until the upload wakes it again at the latest
        energy = power.transfer_j("down", cost.download_bytes, spend.transfer.seconds)
        energy += power.tail_j(compute_s) if cost.download_bytes > 0 else 0.0  # nothing sent: the radio slept
        spend.bytes += cost.download_bytes
        spend.energy_j += energy
        emit(SimEvent(env.now, "download_end", r, d, bytes=cost.download_bytes, seconds=spend.transfer.seconds,
                      energy_j=energy))

        begin("compute", compute_s, cost.flops)
        emit(SimEvent(env.now, "compute_start", r, d, planned_flops=cost.flops, planned_s=spend.planned_s))
        yield env.timeout(spend.planned_s)
        energy = power.compute_j(cost.flops, spend.planned_s)
        spend.compute_s += spend.planned_s
        spend.energy_j += energy
        workload.on_compute_done(d, r)  # the real training; takes host time, no sim time
        emit(SimEvent(env.now, "compute_end", r, d, flops=cost.flops, seconds=spend.planned_s, energy_j=energy))

        if device.devices.refuse_late and rnd.closed_at is not None:  # late: check in, be told no, send nothing
            yield env.timeout(link.latency_s)
            energy = power.transfer_j("up", 0, link.latency_s) + power.tail_j()
            emit(SimEvent(env.now, "straggler", r, d, reason="refused", late_s=env.now - rnd.closed_at,
                          seconds=link.latency_s, energy_j=energy, wasted_bytes=0, wasted_compute_s=0.0,
                          wasted_energy_j=energy))
            device.release()
            return

        begin("upload", link.seconds("up", cost.upload_bytes), cost.upload_bytes)
        emit(SimEvent(env.now, "upload_start", r, d, planned_bytes=cost.upload_bytes, planned_s=spend.planned_s))
        spend.transfer = link.transfer("up", cost.upload_bytes)
        yield spend.transfer
        upload_energy = power.transfer_j("up", cost.upload_bytes, spend.transfer.seconds)
        upload_energy += power.tail_j() if cost.upload_bytes > 0 else 0.0
        emit(SimEvent(env.now, "upload_end", r, d, bytes=cost.upload_bytes, seconds=spend.transfer.seconds,
                      energy_j=upload_energy))
    except Interrupt as cut:
        recovery_s, mode = None, device.devices.recovery_modes[d]
        if cut.cause == "hazard" and mode != "none" and device.recovery_s > 0:
            recovery_s = device.recovery_s
            period_end = float(device.devices.presence.until[d])
            if mode == "next_period" and math.isfinite(period_end):
                recovery_s = period_end - env.now  # the rest of its ready period is lost
        held_s = device.devices.hold_slot(d, dispatched_at)
        emit(dataclasses.replace(dropped_event(env.now, r, device, spend, str(cut.cause), cost),
                                 recovery_s=recovery_s, slot_held_s=held_s))
        if recovery_s is not None:  # no longer eligible: back after its recovery
            device.devices.presence.held[d] = env.now + recovery_s
        device.release()
        return
    device.release()
    device.devices.delivered[d] = (spend.bytes + cost.upload_bytes, spend.compute_s, spend.energy_j + upload_energy)
    if not rnd.deliver(d):
        lost_bytes, lost_compute_s, lost_energy = overwritten(device, cost, spend)
        emit(rnd.rejected(d, env.now, cost.upload_bytes + lost_bytes, upload_energy + lost_energy, lost_compute_s))


def overwritten(device: Device, cost: RoundCost, spend: Spend) -> tuple[int, float, float]:
    """Of a kept training (the device trained, the server never uses its update): the bytes,
    compute seconds and joules of its download and compute that the method's next download
    overwrites — (1 - kept_share) of them. Nothing under world.waste: legacy or an unstated share."""
    if not device.devices.waste_by_method or cost.kept_share is None:
        return 0, 0.0, 0.0
    lost = 1.0 - cost.kept_share
    return round(lost * spend.bytes), lost * spend.compute_s, lost * spend.energy_j


def dropped_event(now: float, r: int, device: Device, spend: Spend, reason: str,
                  cost: RoundCost | None = None) -> SimEvent:
    """The `dropped` event: the cut part of the current step, and the round's spend that is wasted:
    all of it, except when cut mid-upload under world.waste: by_method — the device trained and
    keeps it, so only the share its next download overwrites (`overwritten`) and the cut upload."""
    elapsed = now - spend.phase_start
    moved, flops, energy = 0, None, 0.0
    if spend.phase == "compute":
        fraction = elapsed / spend.planned_s if spend.planned_s > 0 else 1.0
        flops = spend.planned * fraction
        energy = device.energy.compute_j(flops, elapsed)
    else:
        direction = "down" if spend.phase == "download" else "up"
        moved = spend.transfer.cancel()
        energy = device.energy.transfer_j(direction, moved, elapsed) + device.energy.tail_j()
    spent = (spend.bytes, spend.compute_s, spend.energy_j)
    if spend.phase == "upload" and cost is not None and cost.kept_share is not None and device.devices.waste_by_method:
        spent = overwritten(device, cost, spend)
    return SimEvent(
        now, "dropped", r, device.id, phase=spend.phase, reason=reason,
        bytes=None if spend.phase == "compute" else moved, flops=flops, seconds=elapsed, energy_j=energy,
        wasted_bytes=spent[0] + moved,
        wasted_compute_s=spent[1] + (elapsed if spend.phase == "compute" else 0.0),
        wasted_energy_j=spent[2] + energy,
    )
