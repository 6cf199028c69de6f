"""The fleet: one drawn `DeviceProfile` per device, from the tiers and links of the world spec."""
from __future__ import annotations

import math
from dataclasses import dataclass

from simfed.sim.device_data import KBPS, load_link_users, load_scores, lognormal_sigma, score_factor
from simfed.sim.profiles import GB, MBPS, load_links, load_tiers
from simfed.sim.spec import DeviceGroupSpec, WorldSpec
from simfed.sim.streams import Purpose, stream


@dataclass(frozen=True)
class DeviceProfile:
    """What one device is, fixed for the whole run."""

    device_id: int  # 0..N-1 in the order of the spec's groups
    tier: str  # built-in tier name
    link: str  # built-in link name
    flops_per_s: float  # effective training FLOP/s of this device
    memory_bytes: int  # RAM, bytes
    down_bps: float  # downlink, bits per second
    up_bps: float  # uplink, bits per second
    latency_s: float  # fixed cost of one transfer (a round trip), seconds
    joules_per_flop: float  # compute energy, J per FLOP
    joules_per_byte_down: float  # radio energy per byte received, J
    joules_per_byte_up: float  # radio energy per byte sent, J
    down_sigma_ln: float = 0.0  # within-user ln-sd of the downlink per round (link_trace); 0 = fixed rate
    up_sigma_ln: float = 0.0  # within-user ln-sd of the uplink per round (link_trace)
    activation_bytes_per_s: float = 0.0  # effective bandwidth of element-wise work; 0 = folded into flops_per_s
    # power figures (world.energy_model: power; simfed/sim/energy.py)
    compute_power_w: float = 0.0  # sustained power while training, W (the tier's)
    radio_alpha_down_w_per_mbps: float = 0.0  # radio power per Mbit/s received, W (Huang et al. 2012)
    radio_alpha_up_w_per_mbps: float = 0.0  # radio power per Mbit/s sent, W
    radio_beta_w: float = 0.0  # radio power while a transfer is under way, W
    radio_tail_w: float = 0.0  # radio power in the tail after a transfer, W
    radio_tail_s: float = 0.0  # length of that tail, seconds
    throttle_after_s: float = float("inf")  # sustained compute before thermal throttling (world.throttling: tier), seconds
    throttle_factor: float = 1.0  # speed once throttled, fraction of full speed

    @property
    def joules_per_byte(self) -> float:
        """Mean of the two directions, for display only; the engine uses the directed ones."""
        return (self.joules_per_byte_down + self.joules_per_byte_up) / 2

    @property
    def memory_gb(self) -> float:
        return self.memory_bytes / GB


def build_fleet(world: WorldSpec, seed: int) -> list[DeviceProfile]:
    """Draw every device of `world`. Device d's draws come from its own stream (seed, FLEET, d)
    in a fixed order, so a device keeps its luck when other groups change size or tier."""
    fleet: list[DeviceProfile] = []
    for group in world.fleet:
        for _ in range(group.count):
            fleet.append(_draw_device(len(fleet), group, world, seed))
    return fleet


def _draw_device(device_id: int, group: DeviceGroupSpec, world: WorldSpec, seed: int) -> DeviceProfile:
    tier, link = load_tiers()[group.tier], load_links()[group.link]
    rng = stream(seed, Purpose.FLEET, device_id)
    z_compute, z_link = rng.standard_normal(2)  # one z for both directions: a slow line is slow both ways
    memory_u = rng.random()  # uniform pick among the tier's RAM choices
    score_u, user_u = rng.random(2)  # picks in compute_scores / link_trace (drawn always: fixed order)
    compute_sigma = tier.sigma if world.device_spread_sigma is None else world.device_spread_sigma
    link_sigma = link.sigma if world.link_spread_sigma is None else world.link_spread_sigma
    compute_factor = math.exp(compute_sigma * z_compute)  # lognormal, median 1
    link_factor = up_factor = math.exp(link_sigma * z_link)
    rho = world.link_spread_correlation
    if rho < 1:  # the uplink's own draw, correlated rho with the downlink's (only then drawn: old runs unchanged)
        z_own = stream(seed, Purpose.UPLINK_SPREAD, device_id).standard_normal()
        up_factor = math.exp(link_sigma * (rho * z_link + math.sqrt(1 - rho * rho) * z_own))
    flops_per_s = (group.flops_per_s or tier.flops_per_s) * compute_factor
    if group.compute_scores is not None:
        scores = load_scores(group.compute_scores, group.score_field)
        flops_per_s = (group.flops_per_s or tier.flops_per_s) * score_factor(scores, score_u)
    down_bps = (group.down_mbps or link.down_mbps) * MBPS * link_factor
    up_bps = (group.up_mbps or link.up_mbps) * MBPS * up_factor
    down_sigma_ln = up_sigma_ln = 0.0
    if group.link_trace is not None:
        users = load_link_users(group.link_trace)
        down_u, down_sd, up_u, up_sd = users[int(user_u * len(users))]
        down_bps, up_bps = down_u * KBPS, up_u * KBPS
        down_sigma_ln, up_sigma_ln = lognormal_sigma(down_u, down_sd), lognormal_sigma(up_u, up_sd)
    return DeviceProfile(
        device_id=device_id,
        tier=group.tier,
        link=group.link,
        flops_per_s=flops_per_s,
        memory_bytes=tier.memory_bytes[int(memory_u * len(tier.memory_bytes))],
        down_bps=down_bps,
        up_bps=up_bps,
        latency_s=link.latency_s if group.latency_s is None else group.latency_s,
        joules_per_flop=tier.joules_per_flop,
        joules_per_byte_down=link.joules_per_byte_down,
        joules_per_byte_up=link.joules_per_byte_up,
        down_sigma_ln=down_sigma_ln,
        up_sigma_ln=up_sigma_ln,
        # the device's compute factor scales its memory bandwidth too (one chip, one spread)
        activation_bytes_per_s=tier.activation_bytes_per_s * flops_per_s / (group.flops_per_s or tier.flops_per_s),
        compute_power_w=tier.power_w,
        radio_alpha_down_w_per_mbps=link.alpha_down_w_per_mbps,
        radio_alpha_up_w_per_mbps=link.alpha_up_w_per_mbps,
        radio_beta_w=link.beta_w,
        radio_tail_w=link.tail_w,
        radio_tail_s=link.tail_s,
        throttle_after_s=tier.throttle_after_s if world.throttling == "tier" else float("inf"),
        throttle_factor=tier.throttle_factor if world.throttling == "tier" else 1.0,
    )
