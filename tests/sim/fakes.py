"""A fake learning side and small worlds for the engine tests (no torch)."""
from __future__ import annotations

from dataclasses import dataclass, field

from simfed.sim.accounting import Tally
from simfed.sim.engine import Engine
from simfed.sim.events import SimEvent
from simfed.sim.fleet import DeviceProfile, build_fleet
from simfed.sim.spec import WorldSpec
from simfed.sim.workload import RoundCost


@dataclass
class FakeWorkload:
    """Every device costs the same; records the calls the engine makes."""

    download_bytes: int = 1_000_000
    upload_bytes: int = 1_000_000
    flops: float = 2e9
    calls: list[tuple] = field(default_factory=list)

    def cost(self, device: int, round_index: int) -> RoundCost:
        return RoundCost(self.download_bytes, self.upload_bytes, self.flops)

    def on_download(self, device: int, round_index: int) -> None:
        self.calls.append(("download", device, round_index))

    def on_compute_done(self, device: int, round_index: int) -> None:
        self.calls.append(("compute_done", device, round_index))

    def on_aggregate(self, round_index: int, devices: list[int], weights: list[float] | None = None) -> None:
        if weights is None:
            self.calls.append(("aggregate", round_index, list(devices)))
        else:
            self.calls.append(("aggregate", round_index, list(devices), list(weights)))

    def on_round_end(self, round_index: int, sim_time_s: float) -> None:
        self.calls.append(("round_end", round_index, sim_time_s))

    def aggregated(self) -> dict[int, list[int]]:
        return {c[1]: c[2] for c in self.calls if c[0] == "aggregate"}


def plain_device(device_id: int, flops_per_s: float = 1e9) -> DeviceProfile:
    """8 Mbit/s both ways, 0.25 s latency, 1e-10 J/FLOP, 1e-6 J/B down, 2e-6 J/B up:
    numbers exact in binary so hand-computed times compare with ==."""
    return DeviceProfile(device_id=device_id, tier="phone_mid", link="lte", flops_per_s=flops_per_s,
                         memory_bytes=6_000_000_000, down_bps=8e6, up_bps=8e6, latency_s=0.25,
                         joules_per_flop=1e-10, joules_per_byte_down=1e-6, joules_per_byte_up=2e-6)


# The world of the old model, whose numbers the hand computations of these tests were made for:
# energy per unit of work, late reports uploaded, every round counted, no recovery after a
# dropout, one spread draw for both link directions, the old waste accounting. A test of a new
# option sets it over these.
LEGACY_WORLD = {"energy_model": "per_unit", "link_spread_correlation": 1.0, "waste": "legacy",
                "dropout": {"recovery": "none"}}
LEGACY_SERVER = {"late_reports": "upload", "min_reports": 0, "flops_per_s": 0.0}


def legacy(spec: dict) -> dict:
    """`spec` (a world mapping) over the legacy world's settings."""
    return {**LEGACY_WORLD, **spec, "dropout": {**LEGACY_WORLD["dropout"], **spec.get("dropout", {})},
            "server": {**LEGACY_SERVER, **spec.get("server", {})}}


def world(groups: list[dict], **server) -> WorldSpec:
    return WorldSpec.model_validate(legacy({
        "fleet": groups, "server": {"rounds": 1, "deadline_s": 100.0, **server}, "compute_noise_sigma": 0.0,
    }))


def run(world_spec: WorldSpec, workload=None, seed: int = 0, fleet: list[DeviceProfile] | None = None):
    """Run the engine; return (events, tally, workload, engine)."""
    workload = workload or FakeWorkload()
    events: list[SimEvent] = []
    tally = Tally()
    fleet = fleet if fleet is not None else build_fleet(world_spec, seed)
    engine = Engine(world_spec, fleet, workload, seed, observers=[events.append, tally])
    engine.run()
    return events, tally, workload, engine


def of_kind(events: list[SimEvent], kind: str) -> list[SimEvent]:
    return [e for e in events if e.kind == kind]
