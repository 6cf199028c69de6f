"""The deployed-system options of the world, against times worked out by hand (fakes.plain_device:
8 Mbit/s both ways, 0.25 s latency; a round costs 1 MB down, 2 GFLOP, 1 MB up, so at 1 GFLOP/s a
device downloads until 1.25 s, computes until 3.25 s and has uploaded at 4.5 s)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from simfed.sim.cost import failure_after_s, recovery_seconds
from simfed.sim.fleet import build_fleet
from simfed.sim.spec import WorldSpec
from tests.sim.fakes import of_kind, plain_device, run, world

ALWAYS = {"count": 1, "tier": "phone_mid", "link": "lte"}


def with_dropout(spec: WorldSpec, **dropout) -> WorldSpec:
    return spec.model_copy(update={"dropout": spec.dropout.model_copy(update=dropout)})


def first_seed_dropping_in_round_0(hazard: float, within_s: float) -> int:
    """A seed whose device 0 fails before `within_s` of active time in round 0 (from the model's draw)."""
    return next(s for s in range(1000) if failure_after_s(s, 0, 0, hazard) < within_s)


@pytest.mark.parametrize("mean_s", [0.0, 1000.0])
def test_a_hazard_dropped_device_is_not_selectable_until_its_recovery_ends(mean_s):
    seed = first_seed_dropping_in_round_0(3600.0, 4.0)
    spec = with_dropout(world([ALWAYS], rounds=2, target_per_round=1, deadline_s=100.0),
                        hazard_per_hour=3600.0, recovery="exponential" if mean_s else "none", recovery_mean_s=mean_s)
    events, tally, _, _ = run(spec, seed=seed, fleet=[plain_device(0)])
    drop = of_kind(events, "dropped")[0]
    assert (drop.round, drop.reason) == (0, "hazard")
    # round 0 waits for its deadline (the server does not see the drop); round 1 starts when the
    # device is back: at once (no recovery), or drop time + its drawn recovery
    back = drop.t + recovery_seconds(seed, 0, 0, mean_s)
    starts = [e.t for e in of_kind(events, "round_start")]
    assert starts == [0.0, max(100.0, back)]
    assert drop.recovery_s == (recovery_seconds(seed, 0, 0, mean_s) if mean_s else None)
    assert tally.recovery_s == pytest.approx(sum(e.recovery_s or 0.0 for e in of_kind(events, "dropped")))
    if mean_s:
        assert back > 100.0  # the draw is long enough here to show: nobody picks it while it recovers


@pytest.mark.parametrize("recovery, second_start", [("none", 10.0), ("next_period", 100.0), ("auto", 10.0)])
def test_next_period_recovery_loses_the_rest_of_the_ready_period(tmp_path, recovery, second_start):
    # the trace says ready from sim 0 to 50 s and from 100 s on; the hazard cuts device 0 in its
    # first round (before 4 s), which closes at its 10 s deadline. Back at once, it is picked again
    # at 10 s; under next_period it has lost the rest of its 0-50 s period and is back at 100 s;
    # auto treats a trace device as none (the trace says when it is eligible)
    seed = first_seed_dropping_in_round_0(3600.0, 4.0)
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"x": {"trace_start": 100.0, "trace_end": 100.0 + 86400.0,
                                      "ready_time": [[100.0, 150.0], [200.0, 100.0 + 86400.0]]}}))
    device = {**ALWAYS, "availability": {"kind": "trace", "path": str(path)}}
    spec = with_dropout(world([device], rounds=2, target_per_round=1, deadline_s=10.0),
                        hazard_per_hour=3600.0, recovery=recovery)
    events, _, _, _ = run(spec, seed=seed, fleet=[plain_device(0)])
    drop = of_kind(events, "dropped")[0]
    assert (drop.round, drop.reason) == (0, "hazard")
    assert [e.t for e in of_kind(events, "round_start")] == [0.0, second_start]
    assert drop.recovery_s == (50.0 - drop.t if recovery == "next_period" else None)


def test_recovery_draws_are_exponential_with_the_stated_mean():
    draws = [recovery_seconds(0, d, r, 600.0) for d in range(50) for r in range(40)]
    assert np.mean(draws) == pytest.approx(600.0, rel=0.06)
    assert np.median(draws) == pytest.approx(600.0 * math.log(2), rel=0.08)
    assert recovery_seconds(0, 1, 1, 0.0) == 0.0


@pytest.mark.parametrize("timeout", [None, 50.0])
def test_an_async_slot_is_held_until_the_client_timeout(timeout):
    # concurrency 1: device 0 or 1 is dispatched at 0 and dropped by the hazard; the next dispatch
    # comes at the cut (no timeout) or 50 s after the first dispatch
    seed = next(s for s in range(1000) if min(failure_after_s(s, d, 0, 3600.0) for d in (0, 1)) < 4.0
                and failure_after_s(s, 0, 0, 3600.0) != failure_after_s(s, 1, 0, 3600.0))
    spec = WorldSpec.model_validate({
        "fleet": [{**ALWAYS, "count": 2}], "compute_noise_sigma": 0.0, "dropout": {"hazard_per_hour": 3600.0},
        "server": {"policy": "fedasync", "rounds": 1, "concurrency": 1, "client_timeout_s": timeout},
    })
    events, _, _, _ = run(spec, seed=seed, fleet=[plain_device(0), plain_device(1)])
    selected = of_kind(events, "selected")
    first_drop = of_kind(events, "dropped")[0]
    assert selected[0].t == 0.0 and first_drop.device == selected[0].device and first_drop.t < 4.5
    assert selected[1].t == (first_drop.t if timeout is None else 50.0)
    assert first_drop.slot_held_s == (None if timeout is None else 50.0 - first_drop.t)


def test_a_round_with_fewer_than_min_reports_is_abandoned_and_the_tally_says_so():
    # one device, min_reports 2: each round has one report and is abandoned; nothing is merged
    spec = world([ALWAYS], rounds=3, target_per_round=1, min_reports=2)
    events, tally, workload, _ = run(spec, fleet=[plain_device(0)])
    ends = of_kind(events, "round_end")
    assert [(e.t, e.reason, e.count, e.aggregated) for e in ends] == [(4.5, "abandoned", 1, 0), (9.0, "abandoned", 1, 0),
                                                                      (13.5, "abandoned", 1, 0)]
    assert not of_kind(events, "aggregated") and workload.aggregated() == {}
    assert (tally.rounds, tally.abandoned_rounds, tally.updates_aggregated) == (0, 3, 0)
    assert tally.as_summary()["abandoned_rounds"] == 3
    # min_reports 1 merges the same rounds
    _, tally1, _, _ = run(world([ALWAYS], rounds=3, target_per_round=1, min_reports=1), fleet=[plain_device(0)])
    assert (tally1.rounds, tally1.abandoned_rounds) == (3, 0)


def test_the_selection_window_waits_for_enough_check_ins(tmp_path):
    # device 1 comes online at sim 30 s; with a 60 s window the round waits for it and picks both
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"x": {"trace_start": 0.0, "trace_end": 86400.0, "ready_time": [[30.0, 86400.0]]}}))
    late = {**ALWAYS, "availability": {"kind": "trace", "path": str(path)}}
    for window, start, picked in [(0.0, 0.0, [0]), (60.0, 30.0, [0, 1]), (20.0, 20.0, [0])]:
        spec = world([ALWAYS, late], target_per_round=2, over_selection=1.0, selection_window_s=window)
        events, _, _, _ = run(spec, fleet=[plain_device(0), plain_device(1)])
        [rs] = of_kind(events, "round_start")
        assert (rs.t, [e.device for e in of_kind(events, "selected")]) == (start, picked)


def test_late_reports_refuse_charges_one_rtt_and_no_upload_bytes():
    # as test_rounds' straggler: device 1 ends its 8 s compute at 9.25 s, after round 0 closed at
    # 4.5 s; refused, it spends one RTT (0.25 s) checking in and sends nothing
    fleet = [plain_device(0), plain_device(1, flops_per_s=2.5e8)]
    spec = world([{**ALWAYS, "count": 2}], rounds=3, target_per_round=1, over_selection=2.0, late_reports="refuse")
    events, tally, workload, _ = run(spec, fleet=fleet)
    [late] = of_kind(events, "straggler")
    assert (late.t, late.device, late.reason, late.late_s, late.seconds) == (9.5, 1, "refused", 5.0, 0.25)
    assert (late.wasted_bytes, late.wasted_energy_j) == (0, 0.0)
    assert not [e for e in of_kind(events, "upload_start") if e.device == 1]
    assert tally.bytes_up == 3 * 1_000_000  # device 0's three uploads only
    assert tally.wasted_bytes == 0 and tally.stragglers == 1 and tally.late_refused == 1


def test_up_and_down_spread_draws_are_correlated_as_stated():
    def log_factors(rho: float) -> tuple[np.ndarray, np.ndarray]:
        w = WorldSpec.model_validate({"fleet": [{"count": 3000, "tier": "phone_mid", "link": "lte"}],
                                      "link_spread_correlation": rho})
        fleet = build_fleet(w, 0)
        return (np.log([p.down_bps / 21e6 for p in fleet]), np.log([p.up_bps / 6.3e6 for p in fleet]))

    down, up = log_factors(1.0)
    assert np.allclose(down, up)  # one draw for both: the old model
    for rho in (0.0, 0.5):
        down, up = log_factors(rho)
        assert np.corrcoef(down, up)[0, 1] == pytest.approx(rho, abs=0.05)
        assert np.std(up) == pytest.approx(0.9, rel=0.05)  # the link's sigma either way


def test_throttling_slows_compute_after_the_tiers_sustained_load():
    # 2 s of compute at full speed; throttled to half speed after 0.5 s: 0.5 + 1.5 / 0.5 = 3.5 s
    import dataclasses

    device = dataclasses.replace(plain_device(0), throttle_after_s=0.5, throttle_factor=0.5)
    events, _, _, _ = run(world([ALWAYS], target_per_round=1), fleet=[device])
    [c] = of_kind(events, "compute_end")
    assert c.seconds == 3.5 and c.t == 1.25 + 3.5
    # the world option hands each device its tier's curve, or none
    on = WorldSpec.model_validate({"fleet": [ALWAYS], "throttling": "tier"})
    off = WorldSpec.model_validate({"fleet": [ALWAYS]})
    assert (build_fleet(on, 0)[0].throttle_after_s, build_fleet(on, 0)[0].throttle_factor) == (450.0, 0.7)
    assert (build_fleet(off, 0)[0].throttle_after_s, build_fleet(off, 0)[0].throttle_factor) == (math.inf, 1.0)


def test_auto_recovery_follows_the_availability_kind():
    from simfed.sim.engine import recovery_mode

    assert [recovery_mode("auto", k) for k in ("always_on", "markov", "diurnal", "trace")] == [
        "exponential", "next_period", "next_period", "none"]
    assert recovery_mode("exponential", "trace") == "exponential"
    # an always-on device under auto: offline for its exponential draw (as test above with exponential)
    seed = first_seed_dropping_in_round_0(3600.0, 4.0)
    spec = with_dropout(world([ALWAYS], rounds=2, target_per_round=1, deadline_s=100.0),
                        hazard_per_hour=3600.0, recovery="auto", recovery_mean_s=1000.0)
    events, _, _, _ = run(spec, seed=seed, fleet=[plain_device(0)])
    drop = of_kind(events, "dropped")[0]
    assert drop.recovery_s == recovery_seconds(seed, 0, 0, 1000.0)
