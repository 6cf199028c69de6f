"""The engine alone at scale: 100,000 devices, 1,000 synchronous rounds × 100 selected.

A fixed-cost workload (no torch, no training: what dry mode hands the engine) — 4 MB down, 4 MB
up, 5e11 FLOPs per device round — target 100 updates a round with over-selection 1.3 (130
picked), a 600 s deadline, phone_mid on LTE, compute noise and a small dropout hazard on.
Availability: always-on (default) or a two-state Markov chain (mean 2 h online, 2 h offline).
Prints, one a line: wall seconds (fleet build + engine run) and peak RSS (getrusage, MB).
Goals (issue 7): <= 60 s and <= 2 GB on the 2-core dev machine.

    .venv/bin/python bench/engine_dry.py [--devices 100000] [--rounds 1000] [--availability markov]
"""
from __future__ import annotations

import argparse
import resource
import sys
import time

from simfed.sim.accounting import Tally
from simfed.sim.engine import Engine
from simfed.sim.fleet import build_fleet
from simfed.sim.spec import WorldSpec
from simfed.sim.workload import RoundCost


class FixedCost:
    """Every device round costs the same; trains nothing."""

    cost_value = RoundCost(download_bytes=4_000_000, upload_bytes=4_000_000, flops=5e11)

    def cost(self, device: int, round_index: int) -> RoundCost:
        return self.cost_value

    def on_download(self, device, round_index): pass
    def on_compute_done(self, device, round_index): pass
    def on_aggregate(self, round_index, devices, weights=None): pass
    def on_round_end(self, round_index, sim_time_s): pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--availability", choices=["always_on", "markov"], default="always_on")
    args = parser.parse_args()
    availability = ({"kind": "always_on"} if args.availability == "always_on"
                    else {"kind": "markov", "mean_on_s": 7200.0, "mean_off_s": 7200.0})
    world = WorldSpec.model_validate({
        "fleet": [{"count": args.devices, "tier": "phone_mid", "link": "lte", "availability": availability}],
        "dropout": {"hazard_per_hour": 0.5},
        "server": {"rounds": args.rounds, "target_per_round": 100, "over_selection": 1.3, "deadline_s": 600.0},
    })
    start = time.perf_counter()
    fleet = build_fleet(world, seed=0)
    tally = Tally()
    engine = Engine(world, fleet, FixedCost(), seed=0, observers=[tally])
    engine.run()
    wall = time.perf_counter() - start
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux
    tag = f"engine_dry_{args.availability}"
    print(f"{tag}_wall_s {wall:.1f}")
    print(f"{tag}_peak_rss_mb {rss_kb / 1024:.0f}")
    print(f"{tag}_rounds {tally.rounds}", file=sys.stderr)
    print(f"{tag}_sim_time_s {engine.sim_time_s:.0f}", file=sys.stderr)


if __name__ == "__main__":
    main()
