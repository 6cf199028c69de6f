"""Local vs Ray executors on one scenario: wall time, peak RSS and whether the metrics are identical.

Runs the scenario (default scenarios/phones_mixed.yaml, shortened to --rounds rounds) three ways,
one after the other in fresh processes:
  local-t1   executor local, 1 torch thread       (the reference of bit-identity for ray ×1 thread)
  local-tN   executor local, --threads threads     (what a user runs by default on this machine)
  ray-W      executor ray, --workers workers × 1 thread each
and prints one line per figure: wall seconds, peak RSS, minor page faults and system seconds of
the run (the driver's own: for Ray, its workers' are not visible to getrusage), the
speedup of ray over local-tN, and whether ray's metrics.csv equals local-t1's byte for byte.
`--batch-devices K` adds local-tN-batchK (executor.batch_devices K: a flush's updates in one
batched step): its wall time, peak RSS, speedup over local-tN and its metrics' largest relative
difference from local-tN's (equal to float rounding, not bit for bit); `--no-ray` leaves ray (and
local-t1) out; `--set KEY.PATH=VALUE` overrides the scenario in every run.

    .venv/bin/python bench/executor.py [--scenario scenarios/phones_mixed.yaml] [--rounds 2]
                                       [--workers 2] [--threads 2] [--batch-devices 8] [--no-ray]
                                       [--set training.precision=float32]

Needs an otherwise idle machine (two torch processes on two cores slow each other 3-5x).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNNER = r"""
import json, resource, sys, time
from pathlib import Path
from simfed.config import load_scenario
from simfed.run.progress import ProgressView
from simfed.run.runner import run_scenario
path, out, sets = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
scenario = load_scenario(path, sets)
start = time.perf_counter()
with ProgressView([m.name for m in scenario.methods], scenario.world.server.rounds, enabled=False) as view:
    run = run_scenario(scenario, Path(out), scenario.seeds, [view])
wall = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"run": str(run), "wall_s": wall, "rss_mb": usage.ru_maxrss / 1024,
                  "page_faults": usage.ru_minflt, "system_s": usage.ru_stime}))
"""


def run_once(scenario: str, out: Path, sets: list[str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", RUNNER, scenario, str(out), json.dumps(sets)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def largest_difference(a: bytes, b: bytes) -> float:
    """The largest relative difference of two metrics.csv's ppl and acc columns (same rows)."""
    import io

    import pandas as pd

    x, y = pd.read_csv(io.BytesIO(a)), pd.read_csv(io.BytesIO(b))
    if len(x) != len(y):
        return float("inf")
    return float(max(((x[c] - y[c]).abs() / y[c].abs()).max() for c in ("ppl", "acc")))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scenario", default="scenarios/phones_mixed.yaml")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-devices", type=int, default=0, help="also run local-tN with executor.batch_devices K")
    p.add_argument("--no-ray", action="store_true", help="leave ray out, and local-t1 (ray's reference) with it")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="a scenario override for every run, e.g. training.precision=float32 (repeatable)")
    args = p.parse_args()
    common = [f"world.server.rounds={args.rounds}", *args.set]
    configs = {f"local-t{args.threads}": [*common, f"training.threads={args.threads}", "executor.kind=local"]}
    if not args.no_ray:
        configs["local-t1"] = [*common, "training.threads=1", "executor.kind=local"]
        configs[f"ray-{args.workers}"] = [*common, "training.threads=1", "executor.kind=ray", f"executor.workers={args.workers}"]
    batched = f"local-t{args.threads}-batch{args.batch_devices}"
    if args.batch_devices:
        configs[batched] = [*common, f"training.threads={args.threads}", "executor.kind=local",
                            f"executor.batch_devices={args.batch_devices}"]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, sets in configs.items():
            start = time.perf_counter()
            results[name] = run_once(args.scenario, Path(tmp) / name, sets)
            results[name]["process_s"] = time.perf_counter() - start
            results[name]["metrics"] = (Path(results[name]["run"]) / "metrics.csv").read_bytes()
        for name, r in results.items():
            print(f"{name} wall_s {r['wall_s']:.1f} (process {r['process_s']:.1f})")
            print(f"{name} driver_peak_rss_mb {r['rss_mb']:.0f}")
            print(f"{name} driver_page_faults {r['page_faults']} (system {r['system_s']:.1f} s)")
        local_n = results[f"local-t{args.threads}"]
        if args.batch_devices:
            b = results[batched]
            print(f"speedup {batched} over local-t{args.threads} {local_n['wall_s'] / b['wall_s']:.2f}")
            print(f"metrics largest relative difference {batched} vs local-t{args.threads} "
                  f"{largest_difference(b['metrics'], local_n['metrics']):.2e}")
        if args.no_ray:
            return
        ray = results[f"ray-{args.workers}"]
        print(f"speedup ray-{args.workers} over local-t{args.threads} {local_n['wall_s'] / ray['wall_s']:.2f}")
        print(f"speedup ray-{args.workers} over local-t1 {results['local-t1']['wall_s'] / ray['wall_s']:.2f}")
        print(f"metrics identical ray-{args.workers} vs local-t1 {ray['metrics'] == results['local-t1']['metrics']}")
        print(f"metrics identical ray-{args.workers} vs local-t{args.threads} {ray['metrics'] == local_n['metrics']}")


if __name__ == "__main__":
    main()
