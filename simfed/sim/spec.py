"""The `world:` section of a scenario: fleet, availability, dropout and the server, validated."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from simfed.sim.profiles import load_links, load_tiers


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class AlwaysOnSpec(_Strict):
    """The device is always online (idle, charging, unmetered)."""

    kind: Literal["always_on"] = "always_on"


class MarkovSpec(_Strict):
    """Two-state on/off chain with exponential durations; the start state is drawn from the
    stationary distribution, P(on) = mean_on_s / (mean_on_s + mean_off_s)."""

    kind: Literal["markov"]
    mean_on_s: float = Field(gt=0)  # mean length of an online period, seconds (FLASH: mean 34 min)
    mean_off_s: float = Field(gt=0)  # mean length of an offline period, seconds


class TraceSpec(_Strict):
    """Replay of recorded ready periods, in the FLASH/FLHetBench format
    `{client: {trace_start, trace_end, ready_time: [[start_s, end_s], ...]}}`. Each device is
    given one client of the file (drawn from its own random stream); the client's trace is
    shifted to start at sim time 0 and repeats with period trace_end - trace_start."""

    kind: Literal["trace"]
    path: str  # JSON file, relative to the working directory
    offset_s: float = Field(0.0, ge=0)  # start this many seconds into each client's trace


AvailabilitySpec = Annotated[Union[AlwaysOnSpec, MarkovSpec, TraceSpec], Field(discriminator="kind")]


class DeviceGroupSpec(_Strict):
    """`count` devices of one tier on one link. Overrides replace the built-in medians; a device
    still draws its own value around them."""

    count: PositiveInt  # devices in this group
    tier: str  # a built-in tier name (simfed/profiles/tiers.yaml)
    link: str  # a built-in link name (simfed/profiles/links.yaml)
    availability: AvailabilitySpec = Field(default_factory=AlwaysOnSpec)
    flops_per_s: float | None = Field(None, gt=0)  # override: median effective FLOP/s
    down_mbps: float | None = Field(None, gt=0)  # override: median downlink, megabits/s
    up_mbps: float | None = Field(None, gt=0)  # override: median uplink, megabits/s
    latency_s: float | None = Field(None, ge=0)  # override: fixed cost of one transfer, seconds

    @field_validator("tier")
    @classmethod
    def _known_tier(cls, name: str) -> str:
        tiers = load_tiers()
        if name not in tiers:
            raise ValueError(f"unknown tier {name!r}; choose one of: {', '.join(sorted(tiers))}")
        return name

    @field_validator("link")
    @classmethod
    def _known_link(cls, name: str) -> str:
        links = load_links()
        if name not in links:
            raise ValueError(f"unknown link {name!r}; choose one of: {', '.join(sorted(links))}")
        return name


class DropoutSpec(_Strict):
    """Mid-round failures while a device works for a round (download, compute, upload)."""

    hazard_per_hour: float = Field(0.0, ge=0)  # constant failure rate, per hour of active time


class ServerSpec(_Strict):
    """Synchronous rounds with over-selection and a reporting deadline (Bonawitz et al. 2019)."""

    rounds: PositiveInt = 10  # rounds to run
    target_per_round: PositiveInt = 10  # updates the server waits for before it closes a round
    over_selection: float = Field(1.3, ge=1)  # selects ceil(over_selection * target) devices
    deadline_s: float = Field(600.0, gt=0)  # a round closes this many seconds after it starts, at the latest
    max_sim_time_s: float | None = Field(None, gt=0, allow_inf_nan=True)  # stop the run at this sim time, seconds; None = no limit


class WorldSpec(_Strict):
    """The simulated world. Device ids are 0..N-1 in the order of `fleet`'s groups."""

    fleet: list[DeviceGroupSpec] = Field(min_length=1)
    dropout: DropoutSpec = Field(default_factory=DropoutSpec)
    server: ServerSpec = Field(default_factory=ServerSpec)
    compute_noise_sigma: float = Field(0.1, ge=0)  # lognormal run-to-run noise of compute time, per device per round (ln units; measured 2-13%)
    device_spread_sigma: float | None = Field(None, ge=0)  # lognormal spread of FLOP/s within a tier (ln units); None = the tier's own (0.5)
    link_spread_sigma: float | None = Field(None, ge=0)  # lognormal spread of throughput across users (ln units); None = the link's own (0.9)

    @property
    def n_devices(self) -> int:
        return sum(group.count for group in self.fleet)
