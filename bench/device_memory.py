"""Bytes per registered, never-selected device.

Builds a world of N devices (phone_mid on LTE) and runs ONE round that selects one device, so
N - 1 devices are registered and never selected; tracemalloc counts what the engine holds for
them after the run (the engine object is kept alive), divided by N. The fleet's drawn profiles
(`build_fleet`, one frozen `DeviceProfile` a device, built before the engine) are reported apart.
Goal (issue 7): <= 2 KB a device.

    .venv/bin/python bench/device_memory.py [--devices 20000] [--availability markov]
"""
from __future__ import annotations

import argparse
import gc
import tracemalloc

from simfed.sim.engine import Engine
from simfed.sim.fleet import build_fleet
from simfed.sim.spec import WorldSpec
from simfed.sim.workload import RoundCost


class FixedCost:
    def cost(self, device, round_index): return RoundCost(1_000_000, 1_000_000, 1e9)
    def on_download(self, device, round_index): pass
    def on_compute_done(self, device, round_index): pass
    def on_aggregate(self, round_index, devices, weights=None): pass
    def on_round_end(self, round_index, sim_time_s): pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--availability", choices=["always_on", "markov"], default="always_on")
    args = parser.parse_args()
    availability = ({"kind": "always_on"} if args.availability == "always_on"
                    else {"kind": "markov", "mean_on_s": 7200.0, "mean_off_s": 7200.0})
    world = WorldSpec.model_validate({
        "fleet": [{"count": args.devices, "tier": "phone_mid", "link": "lte", "availability": availability}],
        "server": {"rounds": 1, "target_per_round": 1, "over_selection": 1.0, "deadline_s": 600.0},
    })
    n = args.devices
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    fleet = build_fleet(world, seed=0)
    gc.collect()
    after_fleet = tracemalloc.get_traced_memory()[0]
    engine = Engine(world, fleet, FixedCost(), seed=0)
    engine.run()
    gc.collect()
    after_engine = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    tag = f"device_memory_{args.availability}"
    print(f"{tag}_engine_bytes_per_device {(after_engine - after_fleet) / n:.0f}")
    print(f"{tag}_profile_bytes_per_device {(after_fleet - before) / n:.0f}")
    print(f"{tag}_total_bytes_per_device {(after_engine - before) / n:.0f}")
    assert engine.sim_time_s > 0


if __name__ == "__main__":
    main()
