"""Devices and links from data: compute from a phone-score list, per-user link speeds that vary per round."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from simfed.sim.device_data import KBPS, link_variation, load_link_users, load_scores, lognormal_sigma
from simfed.sim.fleet import build_fleet
from simfed.sim.profiles import load_tiers
from tests.sim.fakes import of_kind, run, world

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "traces"


def scores_file(tmp_path: Path, scores: list) -> str:
    path = tmp_path / "phones.json"
    path.write_text(json.dumps([{"Model": f"p{i}", "CPU_F_AI_Score": str(s)} for i, s in enumerate(scores)]))
    return str(path)


def links_file(tmp_path: Path, users: dict) -> str:
    path = tmp_path / "speeds.json"
    path.write_text(json.dumps(users))
    return str(path)


def test_compute_is_the_tier_median_times_the_score_over_the_median_score(tmp_path):
    path = scores_file(tmp_path, [100, 200, 400, "n/a"])  # the non-number is skipped; median 200
    assert load_scores(path) == (100.0, 200.0, 400.0)
    spec = world([{"count": 300, "tier": "phone_mid", "link": "lte", "compute_scores": path}])
    median = load_tiers()["phone_mid"].flops_per_s
    ratios = [d.flops_per_s / median for d in build_fleet(spec, seed=3)]
    assert set(ratios) == {0.5, 1.0, 2.0}  # no lognormal spread on top
    assert all(abs(ratios.count(r) / 300 - 1 / 3) < 0.08 for r in (0.5, 1.0, 2.0))  # uniform pick
    # the group's flops_per_s override sets the level instead of the tier
    spec = world([{"count": 5, "tier": "phone_mid", "link": "lte", "compute_scores": path, "flops_per_s": 1e9}])
    assert {d.flops_per_s for d in build_fleet(spec, seed=3)} <= {5e8, 1e9, 2e9}


def test_other_draws_are_unchanged_by_compute_scores(tmp_path):
    path = scores_file(tmp_path, [100, 200, 400])
    plain = build_fleet(world([{"count": 20, "tier": "phone_mid", "link": "lte"}]), seed=1)
    scored = build_fleet(world([{"count": 20, "tier": "phone_mid", "link": "lte", "compute_scores": path}]), seed=1)
    assert [(d.down_bps, d.memory_bytes) for d in plain] == [(d.down_bps, d.memory_bytes) for d in scored]


@pytest.mark.skipif(not (SHARED / "device_ai_benchmark_list.json").exists(), reason="shared traces absent")
def test_the_ai_benchmark_list_spreads_compute_like_its_scores():
    spec = world([{"count": 3000, "tier": "phone_mid", "link": "lte",
                   "compute_scores": str(SHARED / "device_ai_benchmark_list.json")}])
    median = load_tiers()["phone_mid"].flops_per_s
    ratios = np.array([d.flops_per_s / median for d in build_fleet(spec, seed=0)])
    p10, p50, p90 = np.percentile(ratios, [10, 50, 90])
    assert p50 == pytest.approx(1.0, abs=0.1)
    assert p10 == pytest.approx(274 / 1548, rel=0.25) and p90 == pytest.approx(3414 / 1548, rel=0.2)


def test_link_trace_gives_each_device_a_users_mean_rates(tmp_path):
    path = links_file(tmp_path, {"b": {"down_u": 2000.0, "down_sigma": 0.0, "up_u": 500.0, "up_sigma": 0.0},
                                 "a": {"down_u": 8000.0, "down_sigma": 4000.0, "up_u": 1000.0, "up_sigma": 0.0}})
    assert load_link_users(path)[0] == (8000.0, 4000.0, 1000.0, 0.0)  # sorted by user key
    fleet = build_fleet(world([{"count": 50, "tier": "phone_mid", "link": "lte", "link_trace": path}]), seed=0)
    rates = {(d.down_bps, d.up_bps, d.down_sigma_ln, d.up_sigma_ln) for d in fleet}
    assert rates == {(8000 * KBPS, 1000 * KBPS, lognormal_sigma(8000, 4000), 0.0), (2000 * KBPS, 500 * KBPS, 0.0, 0.0)}
    assert lognormal_sigma(8000, 4000) == pytest.approx(math.sqrt(math.log(1.25)))


def test_within_user_variation_has_the_users_mean_and_sd_and_common_random_numbers():
    s = lognormal_sigma(1.0, 0.4)
    draws = np.array([link_variation(7, 3, r, s, s / 2) for r in range(20000)])
    assert draws[:, 0].mean() == pytest.approx(1.0, abs=0.02) and draws[:, 0].std() == pytest.approx(0.4, rel=0.05)
    assert np.array_equal(np.argsort(draws[:, 0]), np.argsort(draws[:, 1]))  # one z for both directions
    assert link_variation(7, 3, 5, s, s / 2) == tuple(draws[5])  # keyed by (seed, device, round):
    # round 5's draw taken now, after 20,000 others, is the one taken in order above
    assert link_variation(7, 3, 5, s, s) != link_variation(7, 3, 6, s, s)
    assert link_variation(7, 3, 5, 0.0, 0.0) == (1.0, 1.0)


def test_the_engine_moves_bytes_at_this_rounds_rate(tmp_path):
    path = links_file(tmp_path, {"u": {"down_u": 8000.0, "down_sigma": 3000.0, "up_u": 4000.0, "up_sigma": 1000.0}})
    spec = world([{"count": 2, "tier": "phone_mid", "link": "lte", "link_trace": path, "latency_s": 0.0}],
                 rounds=3, target_per_round=2, over_selection=1.0)
    events, *_ = run(spec, seed=11)
    fleet = build_fleet(spec, seed=11)
    ends = of_kind(events, "download_end") + of_kind(events, "upload_end")
    assert len(ends) == 12
    for e in ends:
        p = fleet[e.device]
        down, up = link_variation(11, e.device, e.round, p.down_sigma_ln, p.up_sigma_ln)
        bps = p.down_bps * down if e.kind == "download_end" else p.up_bps * up
        assert e.seconds == pytest.approx(1_000_000 * 8 / bps, rel=1e-9)
    # rates differ from round to round
    assert len({round(e.seconds, 9) for e in ends if e.kind == "download_end" and e.device == 0}) == 3


def test_unreadable_data_files_are_scenario_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        world([{"count": 1, "tier": "phone_mid", "link": "lte", "link_trace": str(tmp_path / "missing.json")}])
    with pytest.raises(ValueError, match="no device has a positive"):
        world([{"count": 1, "tier": "phone_mid", "link": "lte", "compute_scores": scores_file(tmp_path, ["x"])}])
