"""Device energy: per unit of work (J/FLOP, J/byte at the link's median rate), or power x time.

per_unit (the old model): compute costs the tier's J/FLOP, a transfer its link's J/byte whatever
the device's drawn speed, the waiting and the tail.

power (Huang et al., "A Close Examination of Performance and Power Characteristics of 4G LTE
Networks", MobiSys 2012): while a transfer is under way the radio draws
    P = alpha_dir * throughput_Mbps + beta      (W)
so a transfer of M megabits that takes T seconds (latency, waiting for the server's capacity and
the bytes' own time) costs beta * T + alpha_dir * M joules: a slow link pays beta for longer,
about 1.75x per byte at 0.3x the median LTE uplink. After a transfer the radio stays in its
high-power tail state for tail_s at tail_w before it sleeps (LTE: ~11.6 s at ~1.06 W, ~12 J); the
tail after a download ends early when the upload starts first. Compute draws the tier's sustained
power for the compute's seconds, so a device drawn slower than its tier's median pays more per
FLOP.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from simfed.sim.cost import BITS_PER_BYTE
from simfed.sim.fleet import DeviceProfile

EnergyModel = Literal["per_unit", "power"]
MEGABIT = 1e6  # bits


@dataclass(frozen=True)
class DeviceEnergy:
    """One device's energy accounting under `model`."""

    model: EnergyModel
    profile: DeviceProfile

    def compute_j(self, flops: float, seconds: float) -> float:
        """Energy of `flops` that took `seconds` of compute."""
        if self.model == "power":
            return self.profile.compute_power_w * seconds
        return flops * self.profile.joules_per_flop

    def transfer_j(self, direction: str, nbytes: int, seconds: float) -> float:
        """Energy of moving `nbytes` in `direction` over `seconds` of radio activity."""
        p = self.profile
        if self.model == "power":
            alpha = p.radio_alpha_down_w_per_mbps if direction == "down" else p.radio_alpha_up_w_per_mbps
            return p.radio_beta_w * seconds + alpha * nbytes * BITS_PER_BYTE / MEGABIT
        return nbytes * (p.joules_per_byte_down if direction == "down" else p.joules_per_byte_up)

    def tail_j(self, until_next_s: float = float("inf")) -> float:
        """The radio's tail after a transfer, cut short if the radio is used again `until_next_s` later."""
        if self.model != "power":
            return 0.0
        return self.profile.radio_tail_w * min(self.profile.radio_tail_s, until_next_s)
