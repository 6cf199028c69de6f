"""Paired tests over (seed, device): p-values checked against an exact enumeration by hand."""
from __future__ import annotations

import itertools
import math

import pytest

from simfed.report.stats import against_best, final_device_ppl, paired_markdown, paired_test, pairs


def exact_signed_rank_p(diffs: list[float], alternative: str) -> float:
    """P-value of Wilcoxon's W+ (sum of the ranks of positive differences) by enumerating all
    2^n sign patterns — the exact null distribution; distinct |d|, no zeros."""
    ranks = {abs(d): i + 1 for i, d in enumerate(sorted(diffs, key=abs))}
    w_plus = sum(ranks[abs(d)] for d in diffs if d > 0)
    null = [sum(r for r, s in zip(ranks.values(), signs) if s) for signs in itertools.product([0, 1], repeat=len(diffs))]
    greater = sum(w >= w_plus for w in null) / len(null)
    less = sum(w <= w_plus for w in null) / len(null)
    return {"greater": greater, "less": less, "two-sided": min(1.0, 2 * min(greater, less))}[alternative]


def test_paired_test_by_hand():
    # a − b = [1, 2, 3, −0.5]: ranks of |d| 2, 3, 4, 1 → W+ = 9; of the 16 sign patterns W+ ≥ 9
    # for {2,3,4} and {1,2,3,4} only → one-sided p = 2/16
    a, b = [11.0, 12.0, 13.0, 9.5], [10.0, 10.0, 10.0, 10.0]
    t = paired_test(a, b, "greater")
    assert t.p_value == pytest.approx(2 / 16)
    assert t.p_value == pytest.approx(exact_signed_rank_p([1, 2, 3, -0.5], "greater"))
    assert (t.n, t.a_lower, t.b_lower) == (4, 1, 3)
    assert t.mean_diff == pytest.approx((1 + 2 + 3 - 0.5) / 4) and t.median_diff == pytest.approx(1.5)
    assert t.min_p == 1 / 16


@pytest.mark.parametrize("alternative", ["less", "greater", "two-sided"])
def test_paired_test_matches_the_exact_enumeration(alternative):
    diffs = [-0.3, 1.1, -2.4, -0.7, -1.9, 0.2, -3.3, -1.5]
    t = paired_test([d + 50.0 for d in diffs], [50.0] * len(diffs), alternative)
    assert t.p_value == pytest.approx(exact_signed_rank_p([round(d, 10) for d in diffs], alternative), rel=1e-9)


def test_nine_wins_give_p_one_in_512_and_three_cannot_reach_005():
    t9 = paired_test([1.0 + i for i in range(9)], [0.0] * 9, "greater")
    assert t9.p_value == pytest.approx(1 / 512)
    t3 = paired_test([5.0, 6.0, 7.0], [1.0, 1.0, 1.0], "greater")
    assert t3.p_value == pytest.approx(1 / 8) and t3.min_p == 1 / 8


def test_nan_pairs_are_left_out_and_no_difference_has_no_p():
    t = paired_test([1.0, math.nan, 3.0], [1.0, 2.0, 3.0])
    assert t.n == 2 and math.isnan(t.p_value)
    with pytest.raises(ValueError):
        paired_test([1.0], [1.0, 2.0])


def rows_of(table: dict[tuple[str, int, str], list[float]]) -> list[dict]:
    """metrics rows: table[(method, seed, device)] = ppl per round 1, 2, ..."""
    return [{"method": m, "seed": s, "round": r + 1, "device": d, "ppl": v}
            for (m, s, d), values in table.items() for r, v in enumerate(values)]


def test_pairs_use_each_seeds_last_round_and_skip_the_mean_row():
    rows = rows_of({("a", 0, "0"): [9.0, 5.0], ("a", 0, "1"): [9.0, 6.0], ("a", 0, "mean"): [9.0, 5.5],
                    ("b", 0, "0"): [9.0, 7.0], ("b", 0, "1"): [9.0, 8.0], ("b", 0, "mean"): [9.0, 7.5],
                    ("a", 1, "0"): [4.0], ("b", 1, "0"): [4.5]})
    final = final_device_ppl(rows)
    assert pairs(final, "a", "b") == ([5.0, 6.0, 4.0], [7.0, 8.0, 4.5])
    assert pairs(final, "a", "b", devices=["1"]) == ([6.0], [8.0])


def test_against_best_and_its_table():
    table = {}
    for seed in (0, 1):
        for dev in range(4):
            table[("good", seed, str(dev))] = [10.0 + dev + seed]
            table[("bad", seed, str(dev))] = [11.0 + dev + seed + 0.1 * dev]
        table[("good", seed, "mean")] = [11.5 + seed]
        table[("bad", seed, "mean")] = [12.65 + seed]
    best, tests = against_best(rows_of(table))
    assert best == "good" and list(tests) == ["bad"]
    # 8 pairs, bad − good > 0 in every one: the best is lower in all 8, and the two-sided exact p
    # is the two extreme sign patterns of 2^8
    assert tests["bad"].n == 8 and tests["bad"].a_lower == 0 and tests["bad"].b_lower == 8
    assert tests["bad"].p_value == pytest.approx(2 / 256)
    text = paired_markdown(rows_of(table))
    assert "**good**" in text and "| bad | 8 |" in text
