"""Paired tests between methods over devices and seeds: does method A beat method B?

Two methods of one run face the same devices, data splits and world at each seed, so their final
perplexities pair up by (seed, device); the differences are far less noisy than either method's
spread, and a paired test on them is what a reviewer asks for instead of a count of wins.
The test is the Wilcoxon signed-rank test (`scipy.stats.wilcoxon`): exact null distribution for
up to 50 pairs without ties, zero differences dropped (Wilcoxon's convention). With n pairs the
smallest p it can give is 2^-n one-sided (2^(1-n) two-sided): 3 pairs can never reach 0.05, so
`PairedTest.min_p` is printed beside p.

Pure functions over `read_metrics` rows (metrics.csv as dicts).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Sequence

from scipy.stats import wilcoxon

MEAN_DEVICE = "mean"  # the mean-over-devices row (simfed.run.results.MEAN_DEVICE)
Alternative = Literal["two-sided", "less", "greater"]


@dataclass(frozen=True)
class PairedTest:
    """Wilcoxon signed-rank test on the differences d = a − b of paired values."""

    n: int  # pairs with both values finite
    mean_diff: float  # mean of a − b (perplexity: negative = a lower = a better)
    median_diff: float
    a_lower: int  # pairs where a < b
    b_lower: int  # pairs where b < a
    p_value: float  # NaN when there is no non-zero difference to test
    alternative: Alternative  # "less": H1 is a < b; "greater": a > b
    min_p: float  # the smallest p the exact test can give with these many non-zero pairs

    def describe(self) -> str:
        """`mean Δ −1.23 (median −1.10), lower in 7/9 pairs, Wilcoxon p = 0.0039 (less; min 0.002)`."""
        if self.n == 0:
            return "no pairs"
        return (f"mean Δ {self.mean_diff:+.3f} (median {self.median_diff:+.3f}), a lower in {self.a_lower}/{self.n} "
                f"pairs, Wilcoxon p = {format_p(self.p_value)} ({self.alternative}; min attainable {format_p(self.min_p)})")


def format_p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return f"{p:.1e}" if p < 0.001 else f"{p:.3g}"


def paired_test(a: Sequence[float], b: Sequence[float], alternative: Alternative = "two-sided") -> PairedTest:
    """Wilcoxon signed-rank test of a against b, pair by pair (pairs with a NaN are left out)."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b) if math.isfinite(x) and math.isfinite(y)]
    nonzero = [d for d in diffs if d != 0]
    if not diffs:
        return PairedTest(0, math.nan, math.nan, 0, 0, math.nan, alternative, math.nan)
    p = float(wilcoxon(nonzero, alternative=alternative).pvalue) if nonzero else math.nan
    min_p = 0.5 ** len(nonzero) * (2 if alternative == "two-sided" else 1) if nonzero else math.nan
    return PairedTest(
        n=len(diffs), mean_diff=statistics.mean(diffs), median_diff=statistics.median(diffs),
        a_lower=sum(d < 0 for d in diffs), b_lower=sum(d > 0 for d in diffs),
        p_value=p, alternative=alternative, min_p=min_p,
    )


# ---------------------------------------------------------------- from metrics rows

def final_device_ppl(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, int, str], float]:
    """(method, seed, device) → perplexity at that method and seed's last evaluated round
    (every device, and the `mean` row)."""
    rows = list(rows)
    last: dict[tuple[str, int], int] = {}
    for r in rows:
        key = (r["method"], int(r["seed"]))
        last[key] = max(last.get(key, 0), int(r["round"]))
    return {(r["method"], int(r["seed"]), str(r["device"])): float(r["ppl"]) for r in rows
            if int(r["round"]) == last[(r["method"], int(r["seed"]))]}


def pairs(final: dict[tuple[str, int, str], float], method_a: str, method_b: str,
          devices: Sequence[str] | None = None) -> tuple[list[float], list[float]]:
    """Final perplexities of two methods paired by (seed, device), over the seeds both have and
    `devices` (default: every device, not the mean row), in (seed, device) order."""
    keys = sorted({(s, d) for (m, s, d) in final if m == method_a and (devices is None and d != MEAN_DEVICE
                                                                       or devices is not None and d in devices)})
    keys = [k for k in keys if (method_b, *k) in final]
    return [final[(method_a, *k)] for k in keys], [final[(method_b, *k)] for k in keys]


def against_best(rows: Sequence[dict[str, Any]]) -> tuple[str | None, dict[str, PairedTest]]:
    """The method with the lowest final mean perplexity (averaged over seeds), and each other
    method's two-sided paired test against it over (seed, device)."""
    final = final_device_ppl(rows)
    means: dict[str, list[float]] = {}
    for (m, _s, d), v in final.items():
        if d == MEAN_DEVICE and math.isfinite(v):
            means.setdefault(m, []).append(v)
    if not means:
        return None, {}
    best = min(means, key=lambda m: statistics.mean(means[m]))
    tests = {}
    for method in means:
        if method != best:
            tests[method] = paired_test(*pairs(final, method, best))
    return best, tests


def paired_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table: every method against the best one, paired over seeds and devices."""
    best, tests = against_best(rows)
    if best is None:
        return "No finite perplexities to test.\n"
    lines = [
        f"Each method against the best one (**{best}**), final test perplexity paired by (seed, device): "
        "Δ = method − best; two-sided Wilcoxon signed-rank test over the pairs.",
        "",
        "| method | pairs | mean Δ ppl | median Δ ppl | lower than best | p (Wilcoxon) |",
        "|---|---|---|---|---|---|",
    ]
    for method, t in tests.items():
        lines.append(f"| {method} | {t.n} | {t.mean_diff:+.3f} | {t.median_diff:+.3f} | {t.a_lower}/{t.n} | "
                     f"{format_p(t.p_value)} |")
    return "\n".join(lines) + "\n"


def standard_error_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The evaluation's own precision: per method, the final mean perplexity's standard error over
    the test windows (metrics.csv `ppl_se` of the mean row), averaged over seeds."""
    last: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        if str(r["device"]) != MEAN_DEVICE:
            continue
        key = (r["method"], int(r["seed"]))
        if key not in last or int(r["round"]) >= int(last[key]["round"]):
            last[key] = r
    per_method: dict[str, list[float]] = {}
    for (m, _s), r in last.items():
        se = r.get("ppl_se", math.nan)
        per_method.setdefault(m, []).append(float(se) if se is not None else math.nan)
    lines = ["| method | evaluation SE of the final mean ppl (mean over seeds) |", "|---|---|"]
    for m, ses in per_method.items():
        finite = [s for s in ses if math.isfinite(s)]
        lines.append(f"| {m} | {statistics.mean(finite):.3f} |" if finite else f"| {m} | – |")
    return "\n".join(lines) + "\n"
