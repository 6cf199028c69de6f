"""`Tally`: an observer that keeps the run's cumulative costs and a live view of the devices.

Definitions (see events.py for which event carries what):
- bytes_down / bytes_up: bytes that actually moved, including the part of a transfer that a
  dropout cut (whole bytes arrived by the cut; the latency moves nothing).
- energy_j: all compute and radio energy spent, wasted or not.
- wasted_*: spent on behalf of an update the server never uses. A dropped device wastes its
  whole round (bytes both ways, compute seconds, energy). A straggler wastes its upload only
  (bytes and energy): it keeps its local training, so its compute is not counted as wasted.
- dropouts, stragglers, stale: counts of `dropped`, `straggler` and `stale` events (a stale
  update, asynchronous policies only, wastes its upload like a straggler).
- diverged: updates the server refused as non-finite (`diverged` events), each wasting its
  device's whole round; diverged_updates lists them as [device, round].
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simfed.sim.events import SimEvent


@dataclass
class Tally:
    bytes_down: int = 0  # bytes received by devices
    bytes_up: int = 0  # bytes sent by devices
    energy_j: float = 0.0  # joules, all devices
    flops: float = 0.0  # FLOPs executed, including cut work
    compute_s: float = 0.0  # device compute seconds, including cut work
    server_flops: float = 0.0  # the server's merge FLOPs (server.flops_per_s)
    server_compute_s: float = 0.0  # the server's merge seconds
    rounds: int = 0  # rounds closed and merged (abandoned ones not counted)
    abandoned_rounds: int = 0  # sync rounds closed with fewer than server.min_reports reports
    updates_aggregated: int = 0  # updates the server merged
    dropouts: int = 0
    stragglers: int = 0
    stale: int = 0  # async: updates dropped as too stale
    diverged: int = 0  # updates refused as non-finite
    late_refused: int = 0  # stragglers refused at check-in (server.late_reports: refuse), among `stragglers`
    recovery_s: float = 0.0  # offline time after hazard dropouts (dropout.recovery_mean_s), summed
    slot_held_s: float = 0.0  # async: time cut devices' slots stayed taken (server.client_timeout_s), summed
    diverged_updates: list[tuple[int, int]] = field(default_factory=list)  # (device, round) of each
    wasted_compute_s: float = 0.0
    wasted_bytes: int = 0
    wasted_energy_j: float = 0.0
    sim_time_s: float = 0.0  # time of the last event, seconds
    round_dropped: int = 0  # dropouts among the current round's devices (live view)
    current_round: int | None = None
    round_open: bool = False
    _working: dict[int, int] = field(default_factory=dict, repr=False)  # device -> round it works for

    def __call__(self, event: SimEvent) -> None:
        self.sim_time_s = max(self.sim_time_s, event.t)
        kind = event.kind
        if kind == "round_start":
            self.current_round, self.round_open, self.round_dropped = event.round, True, 0
        elif kind == "selected":
            self._working[event.device] = event.round
        elif kind == "download_end":
            self.bytes_down += event.bytes
        elif kind == "compute_end":
            self.flops += event.flops
            self.compute_s += event.seconds
        elif kind == "upload_end":
            self.bytes_up += event.bytes
            self._working.pop(event.device, None)
        elif kind == "dropped":
            self._count_drop(event)
        elif kind == "straggler":
            self.stragglers += 1
            self.late_refused += event.reason == "refused"
            self._waste(event)
        elif kind == "stale":
            self.stale += 1
            self._waste(event)
        elif kind == "diverged":
            self.diverged += 1
            self.diverged_updates.append((event.device, event.round))
            self._waste(event)
        elif kind == "aggregated":
            self.updates_aggregated += event.count
            self.server_flops += event.flops or 0.0
            self.server_compute_s += event.seconds or 0.0
            self.round_open = False
        elif kind == "round_end" and event.reason == "abandoned":
            self.abandoned_rounds += 1
            self.round_open = False
        elif kind == "round_end":
            self.rounds += 1
        if event.energy_j is not None:
            self.energy_j += event.energy_j

    def _count_drop(self, event: SimEvent) -> None:
        self.dropouts += 1
        self.recovery_s += event.recovery_s or 0.0
        self.slot_held_s += event.slot_held_s or 0.0
        if event.round == self.current_round:
            self.round_dropped += 1
        self._working.pop(event.device, None)
        if event.phase == "download":
            self.bytes_down += event.bytes
        elif event.phase == "upload":
            self.bytes_up += event.bytes
        else:
            self.flops += event.flops
            self.compute_s += event.seconds
        self._waste(event)

    def _waste(self, event: SimEvent) -> None:
        self.wasted_bytes += event.wasted_bytes
        self.wasted_compute_s += event.wasted_compute_s
        self.wasted_energy_j += event.wasted_energy_j

    @property
    def in_flight(self) -> int:
        """Devices working on the open round."""
        if not self.round_open:
            return 0
        return sum(1 for r in self._working.values() if r == self.current_round)

    @property
    def straggling(self) -> int:
        """Devices still working on a round that has closed."""
        return len(self._working) - self.in_flight

    def as_summary(self) -> dict[str, Any]:
        return {
            "sim_time_s": self.sim_time_s, "rounds": self.rounds, "abandoned_rounds": self.abandoned_rounds,
            "updates_aggregated": self.updates_aggregated,
            "bytes_down": self.bytes_down, "bytes_up": self.bytes_up, "energy_j": self.energy_j,
            "flops": self.flops, "compute_s": self.compute_s,
            "server_flops": self.server_flops, "server_compute_s": self.server_compute_s,
            "dropouts": self.dropouts, "stragglers": self.stragglers, "stale": self.stale,
            "diverged": self.diverged, "diverged_updates": [list(u) for u in self.diverged_updates],
            "late_refused": self.late_refused, "recovery_s": self.recovery_s, "slot_held_s": self.slot_held_s,
            "wasted_bytes": self.wasted_bytes, "wasted_compute_s": self.wasted_compute_s,
            "wasted_energy_j": self.wasted_energy_j,
            "in_flight": self.in_flight, "straggling": self.straggling, "round_dropped": self.round_dropped,
        }
