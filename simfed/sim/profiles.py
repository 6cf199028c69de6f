"""Built-in device tiers and link types, loaded from simfed/profiles/*.yaml (each with its source).

A user tiers file adds tiers to the built-in ones: `$SIMFED_PROFILES` names a YAML file in the
format of simfed/profiles/tiers.yaml (tier name -> flops_per_s, memory_gb, joules_per_flop, sigma,
source), e.g. the one `simfed calibrate` writes (~/.config/simfed/tiers.yaml by default). Its tiers
are usable in any scenario's `fleet[].tier`; a name of a built-in tier is refused (built-ins never
change). Set the same variable when resuming or validating a run that uses them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

GB = 1_000_000_000  # bytes in a gigabyte (decimal, as phone makers count)
MBPS = 1_000_000  # bits per second in a megabit per second


@dataclass(frozen=True)
class TierProfile:
    """A kind of device; numbers are medians of the tier, a device draws around them."""

    name: str
    flops_per_s: float  # effective training FLOP/s, median of the tier
    memory_bytes: tuple[int, ...]  # RAM choices, bytes; each device draws one uniformly
    joules_per_flop: float  # energy of one training FLOP, J
    sigma: float  # lognormal spread of a device's FLOP/s around the median (ln units)
    source: str  # where the numbers come from
    activation_bytes_per_s: float = 0.0  # effective element-wise bandwidth (calibrated tiers); 0 = not modelled
    power_w: float = 0.0  # sustained power while training, W; a file without it: joules_per_flop * flops_per_s
    throttle_after_s: float = float("inf")  # sustained compute before thermal throttling sets in, seconds (world.throttling: tier)
    throttle_factor: float = 1.0  # speed after that, as a fraction of full speed


@dataclass(frozen=True)
class LinkProfile:
    """A kind of access link; rates are medians across users."""

    name: str
    down_mbps: float  # downlink, megabits per second
    up_mbps: float  # uplink, megabits per second
    latency_s: float  # fixed cost of one transfer (one round trip), seconds
    joules_per_byte_down: float  # radio energy per byte received, J
    joules_per_byte_up: float  # radio energy per byte sent, J
    sigma: float  # lognormal spread of a user's throughput around the median (ln units)
    source: str  # where the numbers come from
    # power model (Huang et al. MobiSys 2012): P = alpha * Mbps + beta while transferring, then a tail
    alpha_down_w_per_mbps: float = 0.0
    alpha_up_w_per_mbps: float = 0.0
    beta_w: float = 0.0
    tail_w: float = 0.0
    tail_s: float = 0.0


USER_PROFILES_ENV = "SIMFED_PROFILES"  # names a user tiers file (see the module doc)


def _read(filename: str) -> dict[str, dict[str, Any]]:
    text = resources.files("simfed.profiles").joinpath(filename).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _positive(name: str, field: str, value: Any) -> float:
    # PyYAML reads `1.0e10` (no exponent sign) as a string: YAML 1.1. Accept it as a number.
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not number > 0:
        raise ValueError(f"profile {name!r}: {field} must be a positive number, got {value!r}")
    return number


def _tier(name: str, row: dict[str, Any]) -> TierProfile:
    memory = row["memory_gb"]
    memory = memory if isinstance(memory, list) else [memory]
    return TierProfile(
        name=name,
        flops_per_s=_positive(name, "flops_per_s", row["flops_per_s"]),
        memory_bytes=tuple(int(_positive(name, "memory_gb", gb) * GB) for gb in memory),
        joules_per_flop=_positive(name, "joules_per_flop", row["joules_per_flop"]),
        sigma=float(row["sigma"]),
        source=str(row["source"]),
        activation_bytes_per_s=(_positive(name, "activation_bytes_per_s", row["activation_bytes_per_s"])
                                if "activation_bytes_per_s" in row else 0.0),
        power_w=(_positive(name, "power_w", row["power_w"]) if "power_w" in row
                 else float(row["joules_per_flop"]) * float(row["flops_per_s"])),
        throttle_after_s=(_positive(name, "throttle_after_s", row["throttle_after_s"])
                          if "throttle_after_s" in row else float("inf")),
        throttle_factor=(_positive(name, "throttle_factor", row["throttle_factor"])
                         if "throttle_factor" in row else 1.0),
    )


def _link(name: str, row: dict[str, Any]) -> LinkProfile:
    return LinkProfile(
        name=name,
        down_mbps=_positive(name, "down_mbps", row["down_mbps"]),
        up_mbps=_positive(name, "up_mbps", row["up_mbps"]),
        latency_s=float(row["latency_s"]),  # may be 0
        joules_per_byte_down=_positive(name, "joules_per_byte_down", row["joules_per_byte_down"]),
        joules_per_byte_up=_positive(name, "joules_per_byte_up", row["joules_per_byte_up"]),
        sigma=float(row["sigma"]),
        source=str(row["source"]),
        alpha_down_w_per_mbps=_positive(name, "alpha_down_mw_per_mbps", row["alpha_down_mw_per_mbps"]) / 1000,
        alpha_up_w_per_mbps=_positive(name, "alpha_up_mw_per_mbps", row["alpha_up_mw_per_mbps"]) / 1000,
        beta_w=_positive(name, "beta_mw", row["beta_mw"]) / 1000,
        tail_w=float(row["tail_mw"]) / 1000,  # may be 0
        tail_s=float(row["tail_s"]),
    )


def load_tiers() -> dict[str, TierProfile]:
    """The device tiers by name: the built-ins (phone_low, phone_mid, phone_flagship, laptop,
    jetson_orin), then those of the user tiers file named by `$SIMFED_PROFILES`, if set."""
    return _load_tiers(os.environ.get(USER_PROFILES_ENV) or None)


@lru_cache(maxsize=8)
def _load_tiers(user_file: str | None) -> dict[str, TierProfile]:
    tiers = {name: _tier(name, row) for name, row in _read("tiers.yaml").items()}
    if user_file is None:
        return tiers
    try:
        rows = yaml.safe_load(open(user_file, encoding="utf-8").read()) or {}
    except OSError as err:
        raise ValueError(f"${USER_PROFILES_ENV}={user_file}: cannot read it ({err.strerror})") from None
    if not isinstance(rows, dict):
        raise ValueError(f"${USER_PROFILES_ENV}={user_file}: expected a mapping of tier name -> fields")
    for name, row in rows.items():
        if name in tiers:
            raise ValueError(f"{user_file}: tier {name!r} is built in; give the user tier another name")
        try:
            tiers[name] = _tier(name, row)
        except (KeyError, TypeError) as err:
            raise ValueError(f"{user_file}: tier {name!r}: missing or malformed field {err}") from None
    return tiers


@lru_cache(maxsize=1)
def load_links() -> dict[str, LinkProfile]:
    """The built-in links by name (lte, 5g, wifi_home, wifi_phone)."""
    return {name: _link(name, row) for name, row in _read("links.yaml").items()}
