"""Links: a device's own access path to the server, uplink and downlink apart, and the server's
side of the network, which concurrent transfers share.

Devices and the server never compute transfer times; they ask the link. A transfer first waits
the link's latency (a round trip, nothing moves), then its bytes flow. Without a server capacity
they flow at the device's own rate. With one (`ServerPipe`: ingress for uploads, egress for
downloads) the flowing transfers share it max-min fairly (processor sharing with per-flow caps):
each gets min(its own link rate, an equal share of what the slower flows leave), recomputed
whenever a transfer starts flowing, ends or is cut. With fast device links this is the plain
capacity / active transfers; unlike a bare min(own, C / n) it leaves no capacity idle when a
slow device cannot use its share.
"""
from __future__ import annotations

from typing import Literal

import simpy

from simfed.sim.cost import BITS_PER_BYTE, bytes_moved, transfer_seconds
from simfed.sim.fleet import DeviceProfile

Direction = Literal["down", "up"]
EPS_S = 1e-6  # flows this close to done when the pipe's timer fires finish with it, seconds


class Transfer(simpy.Timeout):
    """An uncontended transfer: an event that fires when the bytes have arrived."""

    def __init__(self, link: "Link", direction: Direction, nbytes: int):
        self.link, self.direction, self.nbytes = link, direction, nbytes
        self.started = link.env.now
        self.seconds = link.seconds(direction, nbytes)  # how long it takes, sim seconds
        super().__init__(link.env, self.seconds)

    def cancel(self) -> int:
        """Cut it now; the whole bytes that had arrived."""
        return self.link.moved(self.direction, self.nbytes, self.link.env.now - self.started)


class SharedTransfer(simpy.Event):
    """A transfer through a `ServerPipe`: latency first, then bytes at the rate the pipe grants."""

    def __init__(self, pipe: "ServerPipe", own_bps: float, latency_s: float, nbytes: int):
        super().__init__(pipe.env)
        self.pipe, self.own_bps, self.nbytes = pipe, own_bps, nbytes
        self.started = pipe.env.now
        self.bits_left = float(nbytes * BITS_PER_BYTE)
        self.rate_bps = 0.0  # granted now; 0 during the latency
        self.since = pipe.env.now  # when bits_left was last brought up to date
        self.flowing = False
        self.cut = False
        self.seconds: float | None = None  # set when done: how long it took, sim seconds
        self._latency = pipe.env.timeout(latency_s)
        self._latency.callbacks.append(self._start_flowing)

    def _start_flowing(self, _event) -> None:
        if not self.cut:  # not cut during the latency
            self.pipe.join(self)

    def finish(self) -> None:
        self.seconds = self.env.now - self.started
        self.succeed()

    def cancel(self) -> int:
        """Cut it now (the pipe's share goes to the others); the whole bytes that had arrived."""
        self.cut = True  # never triggers now; nobody waits for it any more
        if self.flowing:
            self.pipe.leave(self)
        moved = self.nbytes - self.bits_left / BITS_PER_BYTE
        return min(self.nbytes, int(moved + 1e-6))  # whole bytes; tolerate float residue


class ServerPipe:
    """One direction of the server's network: `capacity_bps` shared by the transfers flowing."""

    def __init__(self, env: simpy.Environment, capacity_bps: float):
        self.env = env
        self.capacity_bps = capacity_bps  # bits per second
        self.flows: list[SharedTransfer] = []
        self._generation = 0  # invalidates the timer of an earlier allocation

    def join(self, flow: SharedTransfer) -> None:
        self._advance()
        flow.flowing, flow.since = True, self.env.now
        self.flows.append(flow)
        self._allocate()

    def leave(self, flow: SharedTransfer) -> None:
        self._advance()
        flow.flowing = False
        self.flows.remove(flow)
        self._allocate()

    def _advance(self) -> None:
        now = self.env.now
        for flow in self.flows:
            flow.bits_left = max(0.0, flow.bits_left - flow.rate_bps * (now - flow.since))
            flow.since = now

    def _allocate(self) -> None:
        """Max-min fair rates (water-filling), then a timer for the first flow to finish."""
        left, n = self.capacity_bps, len(self.flows)
        for flow in sorted(self.flows, key=lambda f: f.own_bps):
            flow.rate_bps = min(flow.own_bps, left / n)
            left, n = left - flow.rate_bps, n - 1
        self._generation += 1
        if self.flows:
            generation = self._generation
            wait = min(flow.bits_left / flow.rate_bps for flow in self.flows)
            self.env.timeout(wait).callbacks.append(lambda _e: self._tick(generation))

    def _tick(self, generation: int) -> None:
        if generation != self._generation:
            return  # the allocation changed since this timer was set
        self._advance()
        done = [flow for flow in self.flows if flow.bits_left <= flow.rate_bps * EPS_S]
        for flow in done:
            flow.bits_left, flow.flowing = 0.0, False
            self.flows.remove(flow)
        self._allocate()
        for flow in done:
            flow.finish()


class ServerSide:
    """The server's two pipes; None in a direction means unlimited (no contention)."""

    def __init__(self, env: simpy.Environment, ingress_mbps: float | None, egress_mbps: float | None):
        self.pipes: dict[Direction, ServerPipe | None] = {
            "up": None if ingress_mbps is None else ServerPipe(env, ingress_mbps * 1e6),
            "down": None if egress_mbps is None else ServerPipe(env, egress_mbps * 1e6),
        }


class Link:
    """A device's link: `transfer` is an event that fires when the bytes have arrived, with
    `seconds` (how long it took) and `cancel()` (cut it; returns the bytes that had arrived)."""

    def __init__(self, env: simpy.Environment, down_bps: float, up_bps: float, latency_s: float,
                 joules_per_byte_down: float, joules_per_byte_up: float, server: ServerSide | None = None):
        self.env = env
        self.bps = {"down": down_bps, "up": up_bps}  # bits per second
        self.latency_s = latency_s  # fixed cost of one transfer (a round trip), seconds
        self.joules_per_byte = {"down": joules_per_byte_down, "up": joules_per_byte_up}
        self.server = server

    @classmethod
    def of(cls, env: simpy.Environment, device: DeviceProfile, server: ServerSide | None = None,
           factors: tuple[float, float] = (1.0, 1.0)) -> "Link":
        """The device's link, its (down, up) rates scaled by `factors` (this round's variation)."""
        return cls(env, device.down_bps * factors[0], device.up_bps * factors[1], device.latency_s,
                   device.joules_per_byte_down, device.joules_per_byte_up, server)

    def seconds(self, direction: Direction, nbytes: int) -> float:
        """How long `nbytes` take in `direction` on this link alone (the server side not counted)."""
        return transfer_seconds(nbytes, self.bps[direction], self.latency_s)

    def transfer(self, direction: Direction, nbytes: int) -> Transfer | SharedTransfer:
        """The event of `nbytes` having arrived."""
        pipe = self.server.pipes[direction] if self.server is not None else None
        if pipe is None or nbytes <= 0:
            return Transfer(self, direction, nbytes)
        return SharedTransfer(pipe, self.bps[direction], self.latency_s, nbytes)

    def moved(self, direction: Direction, nbytes: int, elapsed_s: float) -> int:
        """Bytes of an uncontended transfer of `nbytes` that had arrived when it was cut after `elapsed_s`."""
        return bytes_moved(nbytes, self.bps[direction], self.latency_s, elapsed_s)

    def energy_j(self, direction: Direction, nbytes: int) -> float:
        """Radio energy of moving `nbytes` in `direction`, joules."""
        return nbytes * self.joules_per_byte[direction]
