"""The engine: builds the SimPy world (devices, links, server) and runs it, emitting events."""
from __future__ import annotations

from typing import Callable, Sequence

import simpy

from simfed.sim.availability import timeline
from simfed.sim.device import Devices
from simfed.sim.events import SimEvent
from simfed.sim.fleet import DeviceProfile
from simfed.sim.network import ServerSide
from simfed.sim.presence import Presence
from simfed.sim.server import Doorbell, async_server, server
from simfed.sim.spec import WorldSpec
from simfed.sim.workload import Workload

Observer = Callable[[SimEvent], None]


AUTO_RECOVERY = {"always_on": "exponential", "markov": "next_period", "diurnal": "next_period", "trace": "none"}


def recovery_mode(recovery: str, availability_kind: str) -> str:
    """A device's recovery after a hazard dropout (DropoutSpec.recovery), `auto` resolved by its availability."""
    return AUTO_RECOVERY[availability_kind] if recovery == "auto" else recovery


class Engine:
    """Runs the server's rounds (synchronous, or asynchronous aggregations for fedbuff/fedasync)
    over `fleet` until `world.server.rounds` rounds are done or `max_sim_time_s` passes. Work
    still in flight at that moment is left unfinished.

    `fleet` must be `build_fleet(world, seed)` (or the same devices): the runner builds it first
    so that the learning side can size each device's adapters from its budget.
    """

    def __init__(self, world: WorldSpec, fleet: list[DeviceProfile], workload: Workload, seed: int,
                 observers: Sequence[Observer] = ()):
        if [device.device_id for device in fleet] != list(range(world.n_devices)):
            raise ValueError(f"fleet must list devices 0..{world.n_devices - 1} in order (build_fleet(world, seed))")
        self.world, self.fleet, self.workload, self.seed = world, fleet, workload, seed
        self.observers = list(observers)
        self.env: simpy.Environment | None = None
        self.presence: Presence | None = None
        self.sim_time_s = 0.0  # sim time when the run stopped, seconds
        self.excluded: list[int] = []  # devices whose memory the training does not fit (memory_policy: exclude)

    def emit(self, event: SimEvent) -> None:
        for observe in self.observers:
            observe(event)

    def run(self) -> None:
        env = self.env = simpy.Environment(initial_time=0.0)
        doorbell = Doorbell(env)
        spec = self.world.server
        side = ServerSide(env, spec.ingress_mbps, spec.egress_mbps)
        timelines = (timeline(group_availability, self.seed, d) for d, group_availability in enumerate(self._availability_specs()))
        self.presence = Presence(timelines, len(self.fleet))
        devices = Devices(env, self.fleet, self.presence, doorbell.ring, side)
        self.excluded = self._memory_excluded()
        devices.excluded[self.excluded] = True
        devices.refuse_late = spec.policy == "sync" and spec.late_reports == "refuse"
        devices.energy_model = self.world.energy_model
        devices.recovery_modes = [recovery_mode(self.world.dropout.recovery, spec_.kind)
                                  for spec_ in self._availability_specs()]
        devices.waste_by_method = self.world.waste == "by_method"
        devices.client_timeout_s = spec.client_timeout_s if spec.policy != "sync" else None
        policy = server if spec.policy == "sync" else async_server
        rounds = env.process(policy(env, self.world, devices, doorbell, self.workload, self.seed, self.emit))
        limit = self.world.server.max_sim_time_s
        until = rounds if limit is None else rounds | env.timeout(limit)
        try:
            env.run(until=until)
        except RuntimeError as stuck:  # the queue ran dry: no device will ever be online again
            if "No scheduled events left" not in str(stuck):
                raise
        self.sim_time_s = env.now

    def _memory_excluded(self) -> list[int]:
        """Devices that cannot hold the training (world.memory_policy: exclude, or shrink after the
        learning side has lowered their size), by the workload's
        `memory_need`; none when the policy is ignore or the workload cannot tell."""
        need = getattr(self.workload, "memory_need", None)
        if self.world.memory_policy == "ignore" or need is None:
            return []
        return [p.device_id for p in self.fleet
                if (n := need(p.device_id)) is not None and n > p.memory_bytes]

    def _availability_specs(self):
        for group in self.world.fleet:
            for _ in range(group.count):
                yield group.availability
