"""The paper's claims (ALGORITHMS.md), checked on runs of the studies in scenarios/paper/, per seed.

    .venv/bin/python analysis/claims.py RUN_DIR [RUN_DIR ...]

Each RUN_DIR is a run of one study; the study is recognised by its scenario name and the claim
that study tests is evaluated from metrics.csv at each seed's last evaluation (final test
perplexity), paired by seed (the seeds share data splits and the world, so per-seed differences
are much less noisy than the spread of the means):

- table1_*      1G1S tracks the better of 2G and 2S: per seed, where 1G1S lies between the better
                (0 %) and the worse (100 %) of the two (or that it beats both); holds if its mean
                distance above the better is under half the mean 2G-2S gap.
- table4_*      routers trained on validation batches beat routers trained on training batches:
                per seed, ppl(X-tr) − ppl(X) for X = comigs-1g1s, comigs-2s; holds if positive on average.
- dataqty_overprovisioned_*   the generalist keeps the over-provisioned device with little data
                (device 0) from over-fitting: device 0's final ppl under comigs-1gxs vs local and
                local-moe, and each method's rise from its best round to the last (over-fitting).
- dataqty_rich_specialists_*  specialists on the data-rich device (device 0, 1G3S under 1gxs)
                help the shared generalist: the data-poor devices' (1..3) mean ppl under
                comigs-1gxs vs comigs-1g1s (device 0 with one specialist) and fedavg.

Prints one block per run; a claim that does not hold is printed as such, with its numbers.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from simfed.run.results import read_metrics  # noqa: E402


def final_ppl(rows: list[dict]) -> dict[tuple[str, int, str], float]:
    """(method, seed, device) → test ppl at that method and seed's last evaluated round."""
    last: dict[tuple[str, int], int] = {}
    for r in rows:
        key = (r["method"], r["seed"])
        last[key] = max(last.get(key, 0), r["round"])
    return {(r["method"], r["seed"], str(r["device"])): r["ppl"] for r in rows
            if r["round"] == last[(r["method"], r["seed"])]}


def curve(rows: list[dict], method: str, seed: int, device: str) -> list[tuple[int, float]]:
    return sorted((r["round"], r["ppl"]) for r in rows
                  if r["method"] == method and r["seed"] == seed and str(r["device"]) == device)


def seeds_of(rows: list[dict]) -> list[int]:
    return sorted({r["seed"] for r in rows})


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+.2f} (sd {sd:.2f})" if values else "n/a"


def table1(rows: list[dict]) -> list[str]:
    """Per seed, 1G1S's distance above the better of 2G/2S against the two's gap; the claim holds
    if on average 1G1S is nearer the better one than the worse (below 1G1S beating both counts
    as distance 0, and the gap is averaged before dividing, so a near-tie seed cannot dominate)."""
    ppl, out, above, gaps = final_ppl(rows), [], [], []
    for s in seeds_of(rows):
        g, sp, mix = ppl[("comigs-2g", s, "mean")], ppl[("comigs-2s", s, "mean")], ppl[("comigs-1g1s", s, "mean")]
        better, worse = min(g, sp), max(g, sp)
        above.append(max(mix - better, 0.0))
        gaps.append(worse - better)
        if mix < better:
            where = f"better than both, by {better - mix:.2f}"
        else:
            where = f"{(mix - better) / (worse - better):.0%} of the way from the better to the worse" if worse > better \
                else "equal"
        out.append(f"  seed {s}: 2G {g:.2f}  2S {sp:.2f}  1G1S {mix:.2f}  (better: {'2G' if g < sp else '2S'}) → 1G1S {where}")
    share = statistics.mean(above) / statistics.mean(gaps) if statistics.mean(gaps) > 0 else 0.0
    verdict = "HOLDS" if share < 0.5 else "DOES NOT HOLD"
    out.append(f"  claim '1G1S tracks the better of 2G/2S': on average {share:.0%} of the 2G-2S gap above the better → {verdict}")
    return out


def table4(rows: list[dict]) -> list[str]:
    ppl, out, all_gaps = final_ppl(rows), [], []
    for base in ("comigs-1g1s", "comigs-2s"):
        gaps = [ppl[(f"{base}-tr", s, "mean")] - ppl[(base, s, "mean")] for s in seeds_of(rows)]
        all_gaps += gaps
        per_seed = ", ".join(f"{g:+.2f}" for g in gaps)
        out.append(f"  {base}: ppl(-tr) − ppl(val) per seed {per_seed}; mean {mean_sd(gaps)}")
    wins = sum(g > 0 for g in all_gaps)
    verdict = "HOLDS" if statistics.mean(all_gaps) > 0 else "DOES NOT HOLD"
    out.append(f"  claim 'validation-trained routers beat -tr': val better in {wins}/{len(all_gaps)} pairs → {verdict}")
    return out


def overprovisioned(rows: list[dict]) -> list[str]:
    ppl, out = final_ppl(rows), []
    methods = ("comigs-1gxs", "local", "local-moe", "comigs-1g1s", "fedavg")
    for m in methods:
        finals = [ppl[(m, s, "0")] for s in seeds_of(rows)]
        rises = []
        for s in seeds_of(rows):
            c = curve(rows, m, s, "0")
            rises.append(c[-1][1] - min(p for _, p in c))
        out.append(f"  {m:12s} device 0 final ppl {statistics.mean(finals):7.2f} (per seed "
                   f"{', '.join(f'{v:.2f}' for v in finals)}); rise from its best round to the last {statistics.mean(rises):+.2f}")
    gaps = {m: [ppl[(m, s, "0")] - ppl[("comigs-1gxs", s, "0")] for s in seeds_of(rows)] for m in ("local", "local-moe")}
    holds = all(statistics.mean(g) > 0 for g in gaps.values())
    out.append(f"  device 0: ppl(local) − ppl(1gxs) {mean_sd(gaps['local'])}, ppl(local-moe) − ppl(1gxs) "
               f"{mean_sd(gaps['local-moe'])}")
    out.append(f"  claim 'generalists keep the over-provisioned low-data device from over-fitting' → "
               f"{'HOLDS' if holds else 'DOES NOT HOLD'}")
    return out


def rich_specialists(rows: list[dict]) -> list[str]:
    ppl, out = final_ppl(rows), []
    poor = ("1", "2", "3")

    def poor_mean(m: str, s: int) -> float:
        return statistics.mean(ppl[(m, s, d)] for d in poor)

    for m in ("comigs-1gxs", "comigs-1g1s", "fedavg", "local", "local-moe"):
        values = [poor_mean(m, s) for s in seeds_of(rows)]
        out.append(f"  {m:12s} data-poor devices 1-3 mean ppl {statistics.mean(values):7.2f} "
                   f"(per seed {', '.join(f'{v:.2f}' for v in values)})")
    gaps = [poor_mean("comigs-1g1s", s) - poor_mean("comigs-1gxs", s) for s in seeds_of(rows)]
    out.append(f"  ppl(1g1s) − ppl(1gxs) on devices 1-3 per seed {', '.join(f'{g:+.2f}' for g in gaps)}; "
               f"mean {mean_sd(gaps)}")
    verdict = "HOLDS" if statistics.mean(gaps) > 0 else "DOES NOT HOLD"
    out.append(f"  claim 'specialists on the data-rich device help the shared generalist' → {verdict}")
    return out


CHECKS = {"table1_": table1, "table4_": table4, "dataqty_overprovisioned_": overprovisioned,
          "dataqty_rich_specialists_": rich_specialists}


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for run_dir in map(Path, argv):
        name = yaml.safe_load((run_dir / "scenario.resolved.yaml").read_text())["name"]
        check = next((f for prefix, f in CHECKS.items() if name.startswith(prefix)), None)
        print(f"{name} ({run_dir}):")
        if check is None:
            print("  no claim is checked on this study")
            continue
        rows = read_metrics(run_dir)
        for line in check(rows):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
