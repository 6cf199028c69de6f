"""The server: synchronous rounds with over-selection and a reporting deadline.

Each round it picks ceil(over_selection * target) devices uniformly at random among those online
and idle (fewer if fewer are; if none, it waits until one is), and closes the round at the
`target`-th update or `deadline_s` after the start, whichever comes first. If it picked fewer
than `target`, it closes as soon as all of those have reported. Updates arriving after the close
are stragglers: ignored. The next round starts at the close. The server does not observe
dropouts: a round whose devices vanish waits for its deadline.
"""
from __future__ import annotations

import math
from typing import Sequence

import simpy

from simfed.sim.cost import compute_slowdown, failure_after_s
from simfed.sim.device import Device, Emit
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


def selection_size(over_selection: float, target: int) -> int:
    """ceil(over_selection * target), immune to 1.3 * 10 = 13.000000000000002."""
    return math.ceil(round(over_selection * target, 9))


def choose(ready: Sequence[Device], k: int, seed: int, round_index: int, n_devices: int) -> list[Device]:
    """`k` of the `ready` devices uniformly at random, sorted by id. Every device gets a random
    rank from the (seed, SELECTION, round) stream whoever is ready, so methods whose rounds
    find different devices busy still share the luck of the draw."""
    rank = stream(seed, Purpose.SELECTION, round_index).permutation(n_devices)
    picked = sorted(ready, key=lambda device: rank[device.id])[:k]
    return sorted(picked, key=lambda device: device.id)


def server(env: simpy.Environment, world: WorldSpec, devices: Sequence[Device], doorbell: Doorbell,
           workload: Workload, seed: int, emit: Emit):
    """Run `world.server.rounds` synchronous rounds."""
    spec = world.server
    for r in range(spec.rounds):
        while not (ready := [device for device in devices if device.ready]):
            yield doorbell.wait()
        chosen = choose(ready, selection_size(spec.over_selection, spec.target_per_round), seed, r, len(devices))
        rnd = Round(env, r, quorum=min(spec.target_per_round, len(chosen)))
        emit(SimEvent(env.now, "round_start", r, target=rnd.quorum, eligible=len(ready), selected=len(chosen),
                      deadline_s=spec.deadline_s))
        for device in chosen:
            emit(SimEvent(env.now, "selected", r, device.id))
        for device in chosen:
            device.join(rnd, workload.cost(device.id, r),
                        compute_slowdown(seed, device.id, r, world.compute_noise_sigma),
                        failure_after_s(seed, device.id, r, world.dropout.hazard_per_hour), workload, emit)

        yield rnd.quorum_reached | env.timeout(spec.deadline_s)
        rnd.close()
        merged = sorted(rnd.reports)
        emit(SimEvent(env.now, "aggregated", r, devices=tuple(merged), count=len(merged)))
        workload.on_aggregate(r, merged)
        emit(SimEvent(env.now, "round_end", r, reason="target" if rnd.quorum_reached.triggered else "deadline",
                      aggregated=len(merged), selected=len(chosen), duration_s=env.now - rnd.started_at))
        workload.on_round_end(r, env.now)
