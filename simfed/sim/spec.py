"""The `world:` section of a scenario: fleet, availability, dropout and the server, validated."""
from __future__ import annotations

import os
import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from simfed.sim.profiles import load_links, load_tiers


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def expand_path(value: str | None) -> str | None:
    """A data file's path with `~` and `$VARS` expanded, so that a shipped scenario can name a file
    the user brings (`$SIMFED_TRACES/availability.json`); an unset variable is an error, not a
    literal `$SIMFED_TRACES` directory."""
    if value is None:
        return None
    expanded = os.path.expanduser(os.path.expandvars(value))
    if "$" in expanded:
        missing = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
        raise ValueError(f"{value!r}: environment variable {', '.join(missing) or '?'} is not set")
    return expanded


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
    given one client of the file.

    clock: common (default) replays every client on the trace's one clock, so the time of day
    the trace recorded survives (FLASH: 2.1x swing over the day, peak 04:00). Sim time 0 is trace
    time T0: the trace's earliest trace_start (+ offset_s), moved on to the next `start_hour`
    o'clock of the trace's clock (timestamp mod 86400) if one is given. At trace time T a client
    is looked up at T shifted by whole days into its recorded window [trace_start, trace_end):
    it repeats every floor(length / 1 day) days (at least one day; the part of a day a shorter
    client did not record is offline), so a client keeps its hours whatever day it is replayed on.
    clock: own is the old replay: each client shifted to start at sim time 0 (+ offset_s) and
    repeated with its own length, losing the time of day.

    clients: distinct (default) gives the devices replaying one file distinct clients (a random
    permutation per run) while the file has enough of them, then a fresh permutation for the next
    block of devices; independent draws each device's client on its own (with replacement)."""

    kind: Literal["trace"]
    path: str  # JSON file, relative to the working directory; ~ and $VARS are expanded
    offset_s: float = Field(0.0, ge=0)  # start this many seconds into the trace (own: into each client's trace)
    clock: Literal["common", "own"] = "common"  # one clock for all clients (time of day kept), or each its own
    start_hour: float | None = Field(None, ge=0, lt=24)  # common clock: hour of the trace's day at sim time 0; None = the trace's earliest start
    clients: Literal["distinct", "independent"] = "distinct"  # devices get distinct clients (without replacement) or independent draws

    @field_validator("path")
    @classmethod
    def _expand(cls, value: str) -> str:
        return expand_path(value)

    @model_validator(mode="after")
    def _start_hour_needs_the_common_clock(self) -> "TraceSpec":
        if self.clock == "own" and self.start_hour is not None:
            raise ValueError("start_hour needs clock: common (clock: own replays each client from its own start)")
        return self


class DiurnalSpec(_Strict):
    """Hour-of-day availability: online (ready) periods with Weibull lengths, offline periods whose
    hazard of ending depends on the hour, chosen so that the long-run fraction of devices online in
    hour h is `hourly[h]` (construction in availability.py). Sim time 0 is `start_hour` o'clock."""

    kind: Literal["diurnal"]
    hourly: list[float] | None = Field(None, min_length=24, max_length=24)  # fraction online in hour 0..23; None = built-in FLASH profile (simfed/profiles/diurnal.yaml)
    weibull_shape: float = Field(0.75, gt=0)  # shape k of online-period lengths (FLASH fit: ~0.75)
    weibull_scale_s: float = Field(134 * 60.0, gt=0)  # scale of online-period lengths, seconds (FLASH fit: ~134 min)
    start_hour: float = Field(0.0, ge=0, lt=24)  # local hour of day at sim time 0

    @field_validator("hourly")
    @classmethod
    def _fractions(cls, values: list[float] | None) -> list[float] | None:
        if values is not None and not all(0 < v < 1 for v in values):
            raise ValueError("hourly fractions must lie strictly between 0 and 1")
        return values


AvailabilitySpec = Annotated[Union[AlwaysOnSpec, MarkovSpec, TraceSpec, DiurnalSpec], Field(discriminator="kind")]


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
    compute_scores: str | None = None  # JSON phone list (AI-Benchmark format): FLOP/s = tier median × score / median score (simfed/sim/device_data.py)
    score_field: str = "CPU_F_AI_Score"  # which score of compute_scores' entries
    link_trace: str | None = None  # JSON per-user link speeds (FLASH format, kbit/s mean/sigma), varying per round (simfed/sim/device_data.py)

    @field_validator("compute_scores", "link_trace")
    @classmethod
    def _expand(cls, value: str | None) -> str | None:
        return expand_path(value)

    @field_validator("tier")
    @classmethod
    def _known_tier(cls, name: str) -> str:
        tiers = load_tiers()
        if name not in tiers:
            raise ValueError(f"unknown tier {name!r}; choose one of: {', '.join(sorted(tiers))}")
        return name

    @model_validator(mode="after")
    def _data_files_readable(self) -> "DeviceGroupSpec":
        from simfed.sim.device_data import load_link_users, load_scores  # read once; cached

        try:
            if self.compute_scores is not None:
                load_scores(self.compute_scores, self.score_field)
            if self.link_trace is not None:
                load_link_users(self.link_trace)
        except OSError as err:
            raise ValueError(f"{err.filename}: cannot read it ({err.strerror})") from None
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"malformed device data file: {err}") from None
        return self

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
    # In deployed FL a dropout is mostly a device that stops being eligible (unplugged, off Wi-Fi,
    # in use; Bonawitz et al. 2019), so after a hazard dropout the device is not selectable until:
    #   next_period  its availability timeline's next online period: the rest of its current ready
    #                period is lost, and it comes back when its diurnal clock / Markov chain / trace
    #                says it is ready again; a device whose online period never ends (always_on)
    #                is offline for an exponential time of mean recovery_mean_s instead
    #   exponential  an exponential time of mean recovery_mean_s, whatever its timeline
    #   none         at once (the old model; so does recovery_mean_s 0)
    #   auto         (default) by the device's availability: always_on -> exponential (nothing else
    #                says when it is eligible again), markov and diurnal -> next_period (the model's
    #                ready period ends with the dropout), trace -> none (the recorded trace already
    #                says when the device was eligible; a hazard cut on top is a failure of the work)
    recovery: Literal["auto", "next_period", "exponential", "none"] = "auto"
    # Default: FLASH (Yang et al. 2021), 1,000-client sample: the not-ready gaps between
    # ready periods have a median of 8.5 min and a mean of 3.43 h = 12,352 s (p90 11.7 h; 12,591
    # gaps); an exponential with that mean keeps the long-run time offline (its median, 2.4 h, is
    # above the trace's: the trace's gaps are heavier-tailed than exponential).
    recovery_mean_s: float = Field(12352.0, ge=0)  # seconds


class ServerSpec(_Strict):
    """The server's round policy and its network side.

    sync: synchronous rounds with over-selection and a reporting deadline (Bonawitz et al. 2019).
    fedbuff: asynchronous; `concurrency` devices train at once, the server merges every
    `buffer_size` arrivals with staleness weights 1/sqrt(1+s) (Nguyen et al., AISTATS 2022).
    fedasync: fedbuff with a buffer of one (Xie et al. 2019). For the asynchronous policies a
    "round" is one aggregation (one new model version) and target/over-selection/deadline are unused.
    """

    policy: Literal["sync", "fedbuff", "fedasync"] = "sync"
    rounds: PositiveInt = 10  # rounds to run (async: aggregations, i.e. model versions)
    target_per_round: PositiveInt = 10  # sync: updates the server waits for before it closes a round
    over_selection: float = Field(1.3, ge=1)  # sync: selects ceil(over_selection * target) devices
    deadline_s: float = Field(600.0, gt=0)  # sync: a round closes this many seconds after it starts, at the latest
    buffer_size: PositiveInt = 10  # fedbuff: arrivals merged per aggregation, K (fedasync: always 1)
    max_staleness: int | None = Field(None, ge=0)  # async: updates staler than this are dropped (`stale`); None = keep all
    concurrency: PositiveInt = 10  # async: devices training at once
    ingress_mbps: float | None = Field(None, gt=0)  # server download capacity for uploads, megabits/s, shared by concurrent uploads; None = unlimited
    egress_mbps: float | None = Field(None, gt=0)  # server upload capacity for downloads, megabits/s, shared by concurrent downloads; None = unlimited
    max_sim_time_s: float | None = Field(None, gt=0, allow_inf_nan=True)  # stop the run at this sim time, seconds; None = no limit
    # sync: a round that closes with fewer reports is abandoned: nothing merged, not counted in
    # `rounds`, counted in `abandoned_rounds` (Bonawitz et al. 2019: the server abandons rounds
    # without enough reports). Default 1: a round with no report never counts. 0 = every round
    # counts, even an empty one (the old model)
    min_reports: int = Field(1, ge=0)
    # sync: before selecting, wait up to this long for ceil(over_selection * target) devices to be
    # online and idle (check-in window; Bonawitz et al. 2019 select from the devices checking in
    # during a window); then select among those ready. 0 = select as soon as one is (the old model)
    selection_window_s: float = Field(0.0, ge=0)
    # sync: a straggler reaching its upload after the round closed either uploads in full anyway
    # (upload, the old model) or checks in and is told no (refuse: one round trip, no bytes;
    # Bonawitz et al. 2019: the server rejects late check-ins; the default)
    late_reports: Literal["upload", "refuse"] = "refuse"
    # async: the server learns that a device dropped this long after dispatching it (FedBuff-style
    # servers time out clients; Nguyen et al. 2022 do not give a value): its concurrency slot stays
    # taken until then. None = learns at the moment of the cut (the old model)
    client_timeout_s: float | None = Field(None, gt=0)
    # the server's compute speed for merging updates, float64 FLOP/s: a merge takes the method's
    # merge FLOPs (simfed/learn/merge_flops.py) over this, and the next round (async: the next model
    # version) waits for it. Default 1e11 [A]: a few server cores' effective float64 LAPACK rate (one
    # AVX-512 core peaks at 2 FMA units x 8 doubles x 2 x 3 GHz = 96 GFLOP/s; QR and SVD run well below
    # peak; bench/merge_cost.py measures this host's effective rate on FlexLoRA's merge). A weighted mean
    # of a SmolLM2 CoMiGS payload (2.4 M elements) over 10 devices is 4.9e7 FLOPs (0.5 ms); FlexLoRA's SVD over 10 devices
    # of rank 16-32 is 6.7e10 (0.7 s), over 100 such devices 2.3e12 (23 s). 0 = instantaneous merges (the old model)
    flops_per_s: float = Field(1e11, ge=0)

    @property
    def buffer(self) -> int:
        """K: arrivals per aggregation of the asynchronous policies."""
        return 1 if self.policy == "fedasync" else self.buffer_size

    @model_validator(mode="after")
    def _fedasync_has_no_buffer(self) -> "ServerSpec":
        if self.policy == "fedasync" and "buffer_size" in self.model_fields_set and self.buffer_size != 1:
            raise ValueError("fedasync merges every arrival: leave buffer_size out (or use policy: fedbuff)")
        return self


class WorldSpec(_Strict):
    """The simulated world. Device ids are 0..N-1 in the order of `fleet`'s groups."""

    fleet: list[DeviceGroupSpec] = Field(min_length=1)
    dropout: DropoutSpec = Field(default_factory=DropoutSpec)
    server: ServerSpec = Field(default_factory=ServerSpec)
    compute_noise_sigma: float = Field(0.1, ge=0)  # lognormal run-to-run noise of compute time, per device per round (ln units; measured 2-13%)
    device_spread_sigma: float | None = Field(None, ge=0)  # lognormal spread of FLOP/s within a tier (ln units); None = the tier's own (0.5)
    link_spread_sigma: float | None = Field(None, ge=0)  # lognormal spread of throughput across users (ln units); None = the link's own (0.9)
    # correlation rho of a device's uplink and downlink spread draws (ln units): z_up = rho z_down +
    # sqrt(1 - rho^2) z_own. 1 = one draw for both (the old model). Default 0.45: the correlation of
    # ln(mean down) and ln(mean up) over the 19 users of FLASH's speed_distri.json (Yang et al. 2021;
    # few users: its 95% interval is roughly 0 to 0.75)
    link_spread_correlation: float = Field(0.45, ge=-1, le=1)
    # device energy (simfed/sim/energy.py): per_unit = the tier's J/FLOP and the link's J/byte at its
    # median rate (the old model); power = power x time, Huang et al. (MobiSys 2012): compute at the
    # tier's sustained power, transfers at alpha * Mbps + beta for their whole duration, plus the
    # radio's tail after each transfer (the default)
    energy_model: Literal["per_unit", "power"] = "power"
    # wasted work of a device whose update the server never uses but whose training the device keeps
    # (a straggler, a stale update, a cut mid-upload): by_method = its upload, plus the share of its
    # download and compute that the method's next download overwrites (RoundCost.kept_share);
    # legacy = the upload only for a straggler, the whole round for a cut (the old model)
    waste: Literal["by_method", "legacy"] = "by_method"
    # thermal throttling under sustained load: tier = each tier's curve (simfed/profiles/tiers.yaml:
    # full speed for throttle_after_s, then throttle_factor of it; phones 0.7 after 7.5 min, an
    # assumption from the 0.6-0.8 after 5-10 min of shared/PROFILES.md, hence off by default)
    throttling: Literal["off", "tier"] = "off"
    # a device trains only if base model + adapters (+ grads, AdamW moments) + activations fit its RAM
    # (simfed/learn/memory.py): ignore = never checked; exclude = the server never selects one that does not fit;
    # shrink = the method sizes the device as if it had less memory (fewer experts, lower rank) until its
    # training fits, and excludes it only if even the smallest size does not
    memory_policy: Literal["ignore", "exclude", "shrink"] = "ignore"

    @property
    def n_devices(self) -> int:
        return sum(group.count for group in self.fleet)

    @model_validator(mode="after")
    def _buffer_fits_the_fleet(self) -> "WorldSpec":
        # a device's update waits in the buffer until it is merged, and the device is not picked
        # again meanwhile: a buffer larger than the fleet would never fill
        if self.server.policy != "sync" and self.server.buffer > self.n_devices:
            raise ValueError(f"server.buffer_size {self.server.buffer} exceeds the fleet's {self.n_devices} devices")
        return self
