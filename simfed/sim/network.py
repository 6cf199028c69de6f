"""Links: a device's own access path to the server, uplink and downlink apart.

Devices and the server never compute transfer times; they ask the link. Each device has its own
link and the server's side is not a bottleneck, so transfers do not contend.
"""
from __future__ import annotations

from typing import Literal

import simpy

from simfed.sim.cost import bytes_moved, transfer_seconds
from simfed.sim.fleet import DeviceProfile

Direction = Literal["down", "up"]


class Link:
    """A device's link: `transfer` is an event that fires when the bytes have arrived."""

    def __init__(self, env: simpy.Environment, down_bps: float, up_bps: float, latency_s: float,
                 joules_per_byte_down: float, joules_per_byte_up: float):
        self.env = env
        self.bps = {"down": down_bps, "up": up_bps}  # bits per second
        self.latency_s = latency_s  # fixed cost of one transfer (a round trip), seconds
        self.joules_per_byte = {"down": joules_per_byte_down, "up": joules_per_byte_up}

    @classmethod
    def of(cls, env: simpy.Environment, device: DeviceProfile) -> "Link":
        return cls(env, device.down_bps, device.up_bps, device.latency_s,
                   device.joules_per_byte_down, device.joules_per_byte_up)

    def seconds(self, direction: Direction, nbytes: int) -> float:
        """How long `nbytes` take in `direction`."""
        return transfer_seconds(nbytes, self.bps[direction], self.latency_s)

    def transfer(self, direction: Direction, nbytes: int) -> simpy.Timeout:
        """The event of `nbytes` having arrived."""
        return self.env.timeout(self.seconds(direction, nbytes))

    def moved(self, direction: Direction, nbytes: int, elapsed_s: float) -> int:
        """Bytes of a transfer of `nbytes` that had arrived when it was cut after `elapsed_s`."""
        return bytes_moved(nbytes, self.bps[direction], self.latency_s, elapsed_s)

    def energy_j(self, direction: Direction, nbytes: int) -> float:
        """Radio energy of moving `nbytes` in `direction`, joules."""
        return nbytes * self.joules_per_byte[direction]
