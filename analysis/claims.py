"""The paper's claims (ALGORITHMS.md), checked on runs of the studies in scenarios/paper/ (and
scenarios/paper_scale/, scenarios/cpu_scale/), with a paired test each.

    .venv/bin/python analysis/claims.py RUN_DIR [RUN_DIR ...]

Each RUN_DIR is a run of one study; the study is recognised by its scenario name and the claim
that study tests is evaluated from metrics.csv at each seed's last evaluation (final test
perplexity). Two methods of a run share the data splits and the world at each seed, so their
final perplexities pair up by (seed, device); each claim is decided by a one-sided Wilcoxon
signed-rank test over those pairs (simfed/report/stats.py), printed with its p-value and the
smallest p the pairs could give, never by a count of wins alone:

- table1_*      1G1S tracks the better of 2G and 2S: per (seed, device), d = ppl(1G1S) − the
                midpoint of ppl(2G) and ppl(2S); d < 0 means 1G1S is nearer the better of the
                two than the worse. H1: d < 0. (Also printed: per seed on the device mean, where
                1G1S lies between the better (0 %) and the worse (100 %).)
- table4_*      routers trained on validation batches beat routers trained on training batches:
                d = ppl(X-tr) − ppl(X) for X = comigs-1g1s, comigs-2s, per (seed, device, X).
                H1: d > 0.
- dataqty_overprovisioned_*   the generalist keeps the over-provisioned device with little data
                (device 0) from over-fitting: d = ppl(local) − ppl(comigs-1gxs) and
                ppl(local-moe) − ppl(comigs-1gxs) on device 0, per seed. H1: d > 0 for both.
                (With one such device the pairs are the seeds: 3 seeds give p ≥ 1/8.)
- dataqty_rich_specialists_*  specialists on the data-rich device (device 0, 1G3S under 1gxs)
                help the shared generalist: d = ppl(comigs-1g1s) − ppl(comigs-1gxs) on the
                data-poor devices 1..3, per (seed, device). H1: d > 0.

A study whose name holds several prefixes after `_` runs each of their checks
(scenarios/cpu_scale/table1_table4_multilingual.yaml: Table 1's and Table 4's on one run).

Verdict at the 5 % level: HOLDS (p < 0.05), "right direction, not significant" (p ≥ 0.05 with
the mean difference on the claimed side), or DOES NOT HOLD. A claim that does not hold is printed
as such, with its numbers.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from simfed.report.stats import PairedTest, final_device_ppl, format_p, paired_test, pairs  # noqa: E402
from simfed.report.readers import read_metrics  # noqa: E402

ALPHA = 0.05
POOR = ("1", "2", "3")  # data-rich study: the data-poor devices


def final_ppl(rows: list[dict]) -> dict[tuple[str, int, str], float]:
    """(method, seed, device) → test ppl at that method and seed's last evaluated round."""
    return final_device_ppl(rows)


def curve(rows: list[dict], method: str, seed: int, device: str) -> list[tuple[int, float]]:
    return sorted((r["round"], r["ppl"]) for r in rows
                  if r["method"] == method and r["seed"] == seed and str(r["device"]) == device)


def seeds_of(rows: list[dict]) -> list[int]:
    return sorted({r["seed"] for r in rows})


def devices_of(ppl: dict[tuple[str, int, str], float]) -> list[str]:
    return sorted({d for (_, _, d) in ppl if d != "mean"}, key=lambda d: (len(d), d))


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):+.2f} (sd {sd:.2f})" if values else "n/a"


def verdict(test: PairedTest) -> str:
    """HOLDS / right direction, not significant / DOES NOT HOLD, for a one-sided test."""
    if test.n == 0 or test.p_value != test.p_value:  # no pairs, or no difference at all
        return f"DOES NOT HOLD (no difference to test; {test.n} pairs)"
    sided = test.mean_diff < 0 if test.alternative == "less" else test.mean_diff > 0
    if test.p_value < ALPHA and sided:
        return f"HOLDS (p = {format_p(test.p_value)})"
    if sided:
        return f"right direction, not significant (p = {format_p(test.p_value)}, min attainable {format_p(test.min_p)})"
    return f"DOES NOT HOLD (p = {format_p(test.p_value)})"


def test_line(label: str, test: PairedTest) -> str:
    return f"  {label}: {test.n} pairs, {test.describe()}"


def table1(rows: list[dict]) -> list[str]:
    """1G1S against the midpoint of 2G and 2S per (seed, device), and the per-seed picture on the
    device mean (where 1G1S lies from the better to the worse)."""
    ppl, out = final_ppl(rows), []
    for s in seeds_of(rows):
        g, sp, mix = ppl[("comigs-2g", s, "mean")], ppl[("comigs-2s", s, "mean")], ppl[("comigs-1g1s", s, "mean")]
        better, worse = min(g, sp), max(g, sp)
        if mix < better:
            where = f"better than both, by {better - mix:.2f}"
        else:
            where = f"{(mix - better) / (worse - better):.0%} of the way from the better to the worse" if worse > better \
                else "equal"
        out.append(f"  seed {s}: 2G {g:.2f}  2S {sp:.2f}  1G1S {mix:.2f}  (better: {'2G' if g < sp else '2S'}) → 1G1S {where}")
    keys = sorted((s, d) for (m, s, d) in ppl if m == "comigs-1g1s" and d != "mean"
                  and ("comigs-2g", s, d) in ppl and ("comigs-2s", s, d) in ppl)
    mix = [ppl[("comigs-1g1s", *k)] for k in keys]
    gen = [ppl[("comigs-2g", *k)] for k in keys]
    spec = [ppl[("comigs-2s", *k)] for k in keys]
    midpoint = [(a + b) / 2 for a, b in zip(gen, spec)]
    test = paired_test(mix, midpoint, "less")
    out.append(test_line("ppl(1G1S) − midpoint(2G, 2S) per (seed, device)", test))
    better = [min(a, b) for a, b in zip(gen, spec)]
    out.append(test_line("ppl(1G1S) − ppl(better of 2G/2S) per (seed, device), two-sided",
                         paired_test(mix, better, "two-sided")))
    out.append(f"  claim '1G1S tracks the better of 2G/2S' → {verdict(test)}")
    return out


def table4(rows: list[dict]) -> list[str]:
    ppl, out, tr_all, val_all = final_ppl(rows), [], [], []
    for base in ("comigs-1g1s", "comigs-2s"):
        tr, val = pairs(ppl, f"{base}-tr", base)
        tr_all += tr
        val_all += val
        out.append(test_line(f"{base}: ppl(-tr) − ppl(val)", paired_test(tr, val, "greater")))
    test = paired_test(tr_all, val_all, "greater")
    out.append(test_line("both variants: ppl(-tr) − ppl(val) per (seed, device, variant)", test))
    out.append(f"  claim 'validation-trained routers beat -tr' → {verdict(test)}")
    return out


def overprovisioned(rows: list[dict]) -> list[str]:
    ppl, out = final_ppl(rows), []
    methods = [m for m in ("comigs-1gxs", "local", "local-moe", "comigs-1g1s", "fedavg") if (m, seeds_of(rows)[0], "0") in ppl]
    for m in methods:
        finals = [ppl[(m, s, "0")] for s in seeds_of(rows)]
        rises = []
        for s in seeds_of(rows):
            c = curve(rows, m, s, "0")
            rises.append(c[-1][1] - min(p for _, p in c))
        out.append(f"  {m:12s} device 0 final ppl {statistics.mean(finals):7.2f} (per seed "
                   f"{', '.join(f'{v:.2f}' for v in finals)}); rise from its best round to the last {statistics.mean(rises):+.2f}")
    tests = {m: paired_test(*pairs(ppl, m, "comigs-1gxs", devices=["0"]), "greater") for m in ("local", "local-moe")}
    for m, t in tests.items():
        out.append(test_line(f"device 0: ppl({m}) − ppl(1gxs) per seed", t))
    worst = max(tests.values(), key=lambda t: (t.p_value if t.p_value == t.p_value else 2.0))
    out.append(f"  claim 'generalists keep the over-provisioned low-data device from over-fitting' → {verdict(worst)}"
               " (the weaker of the two tests)")
    return out


def rich_specialists(rows: list[dict]) -> list[str]:
    ppl, out = final_ppl(rows), []

    def poor_mean(m: str, s: int) -> float:
        return statistics.mean(ppl[(m, s, d)] for d in POOR)

    for m in ("comigs-1gxs", "comigs-1g1s", "fedavg", "local", "local-moe"):
        if (m, seeds_of(rows)[0], "1") not in ppl:
            continue
        values = [poor_mean(m, s) for s in seeds_of(rows)]
        out.append(f"  {m:12s} data-poor devices 1-3 mean ppl {statistics.mean(values):7.2f} "
                   f"(per seed {', '.join(f'{v:.2f}' for v in values)})")
    test = paired_test(*pairs(ppl, "comigs-1g1s", "comigs-1gxs", devices=POOR), "greater")
    out.append(test_line("devices 1-3: ppl(1g1s) − ppl(1gxs) per (seed, device)", test))
    out.append(f"  claim 'specialists on the data-rich device help the shared generalist' → {verdict(test)}")
    return out


CHECKS = {"table1_": table1, "table4_": table4, "dataqty_overprovisioned_": overprovisioned,
          "dataqty_rich_specialists_": rich_specialists}


def checks_for(name: str) -> list:
    """The checks a study runs: those whose prefix starts the name or one of its `_`-separated
    parts (scenarios/cpu_scale/table1_table4_multilingual runs both Table 1's and Table 4's)."""
    return [f for prefix, f in CHECKS.items() if name.startswith(prefix) or f"_{prefix}" in name]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for run_dir in map(Path, argv):
        name = yaml.safe_load((run_dir / "scenario.resolved.yaml").read_text())["name"]
        checks = checks_for(name)
        print(f"{name} ({run_dir}):")
        if not checks:
            print("  no claim is checked on this study")
            continue
        rows = read_metrics(run_dir)
        for check in checks:
            for line in check(rows):
                print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
