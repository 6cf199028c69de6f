"""A round, step by step, against times and totals worked out by hand.

Every device here (fakes.plain_device) has 8 Mbit/s both ways and 0.25 s latency; every round
costs 1 MB down, 2 GFLOP, 1 MB up. At 1 GFLOP/s: download 0.25 + 1.0 = 1.25 s, compute 2 s
(ends 3.25), upload 0.25 + 1.0 s (ends 4.5). Energy: 1e6 B * 1e-6 J/B + 2e9 * 1e-10 J/FLOP +
1e6 B * 2e-6 J/B = 1 + 0.2 + 2 = 3.2 J.
"""
from __future__ import annotations

import json

import pytest

from tests.sim.fakes import of_kind, plain_device, run, world

ALWAYS = {"count": 1, "tier": "phone_mid", "link": "lte"}


def trace_group(tmp_path, ready: list[list[float]], name: str = "trace.json") -> dict:
    """A device whose availability replays one client: online during `ready` (trace time 100 = sim 0)."""
    path = tmp_path / name
    path.write_text(json.dumps({"7": {"trace_start": 100.0, "trace_end": 1100.0, "ready_time": ready}}))
    return {**ALWAYS, "availability": {"kind": "trace", "path": str(path)}}


def test_one_device_round_has_hand_computed_times_and_energy():
    events, tally, workload, _ = run(world([ALWAYS], target_per_round=1), fleet=[plain_device(0)])
    timeline = [(e.t, e.kind) for e in events]
    assert timeline == [
        (0.0, "round_start"), (0.0, "selected"), (0.0, "download_start"), (1.25, "download_end"),
        (1.25, "compute_start"), (3.25, "compute_end"), (3.25, "upload_start"), (4.5, "upload_end"),
        (4.5, "aggregated"), (4.5, "round_end"),
    ]
    assert workload.calls == [("download", 0, 0), ("compute_done", 0, 0), ("aggregate", 0, [0]), ("round_end", 0, 4.5)]
    assert tally.energy_j == pytest.approx(3.2)
    assert (tally.bytes_down, tally.bytes_up, tally.rounds, tally.updates_aggregated) == (1_000_000, 1_000_000, 1, 1)
    assert of_kind(events, "round_end")[0].reason == "target"


def test_a_device_that_drops_during_upload_contributes_nothing_and_wastes_its_round(tmp_path):
    # device 0 goes offline at 4.0 s, 0.75 s into its upload (3.25 -> 4.5): after the 0.25 s
    # latency, 0.5 s at 1e6 B/s = 500_000 B had left. Device 1 reports at 4.5; the server waits
    # for 2 updates, so the round closes at the 10 s deadline with device 1 alone.
    spec = world([trace_group(tmp_path, [[100.0, 104.0]]), ALWAYS], target_per_round=2, over_selection=1.0,
                 deadline_s=10.0)
    events, tally, workload, _ = run(spec, fleet=[plain_device(0), plain_device(1)])
    [drop] = of_kind(events, "dropped")
    assert (drop.t, drop.device, drop.phase, drop.reason) == (4.0, 0, "upload", "offline")
    assert (drop.bytes, drop.seconds) == (500_000, 0.75)
    assert drop.energy_j == pytest.approx(500_000 * 2e-6)
    assert drop.wasted_bytes == 1_000_000 + 500_000
    assert drop.wasted_compute_s == 2.0
    assert drop.wasted_energy_j == pytest.approx(1.0 + 0.2 + 1.0)
    assert workload.aggregated() == {0: [1]}
    assert of_kind(events, "round_end")[0].t == 10.0 and of_kind(events, "round_end")[0].reason == "deadline"
    assert ("compute_done", 0, 0) in workload.calls  # it had finished training before the cut
    assert tally.bytes_up == 1_500_000 and tally.bytes_down == 2_000_000
    assert (tally.wasted_bytes, tally.wasted_compute_s, tally.dropouts) == (1_500_000, 2.0, 1)
    assert tally.wasted_energy_j == pytest.approx(2.2)
    assert tally.energy_j == pytest.approx(3.2 + 2.2)


def test_a_device_that_drops_during_compute_is_never_asked_for_its_update(tmp_path):
    # offline at 2.0 s: 0.75 s into 2 s of compute -> 37.5% of 2 GFLOP = 7.5e8 FLOP, 0.075 J
    spec = world([trace_group(tmp_path, [[100.0, 102.0]])], target_per_round=1, deadline_s=10.0)
    events, tally, workload, _ = run(spec, fleet=[plain_device(0)])
    [drop] = of_kind(events, "dropped")
    assert (drop.phase, drop.seconds, drop.bytes) == ("compute", 0.75, None)
    assert drop.flops == pytest.approx(7.5e8)
    assert drop.wasted_compute_s == 0.75 and drop.wasted_bytes == 1_000_000
    assert drop.wasted_energy_j == pytest.approx(1.0 + 0.075)
    assert ("compute_done", 0, 0) not in workload.calls
    assert not of_kind(events, "upload_start")
    assert workload.aggregated() == {0: []}


def test_over_selection_picks_13_of_20_and_closes_at_the_10th_report():
    # device i trains at (i+1) GFLOP/s, so it reports at 1.25 + 2/(i+1) + 1.25 s
    fleet = [plain_device(i, flops_per_s=(i + 1) * 1e9) for i in range(20)]
    events, _, workload, _ = run(world([{**ALWAYS, "count": 20}], target_per_round=10, over_selection=1.3),
                                 fleet=fleet)
    [start] = of_kind(events, "round_start")
    picked = [e.device for e in of_kind(events, "selected")]
    assert (start.selected, start.target, start.eligible, len(set(picked))) == (13, 10, 20, 13)
    finish = sorted((2.5 + 2 / (i + 1), i) for i in picked)
    [end] = of_kind(events, "round_end")
    assert end.t == pytest.approx(finish[9][0]) and end.reason == "target"
    assert workload.aggregated() == {0: sorted(i for _, i in finish[:10])}


def test_the_deadline_closes_a_round_that_cannot_reach_its_target():
    # 4 devices report at 4.5 s; 9 need 1.25 + 2e9/1e6 + 1.25 = 2002.5 s; deadline 100 s
    fleet = [plain_device(i, flops_per_s=1e9 if i < 4 else 1e6) for i in range(13)]
    events, _, workload, _ = run(world([{**ALWAYS, "count": 13}], target_per_round=10, over_selection=1.3),
                                 fleet=fleet)
    [end] = of_kind(events, "round_end")
    assert (end.t, end.reason, end.aggregated, end.selected) == (100.0, "deadline", 4, 13)
    assert workload.aggregated() == {0: [0, 1, 2, 3]}


def test_a_straggler_is_excluded_and_reported_and_stays_busy():
    # device 0 reports at 4.5 s and closes round 0 (target 1); device 1 computes 8 s and reports
    # at 1.25 + 8 + 1.25 = 10.5 s, 6 s late. Round 1 (4.5 -> 9.0) and round 2 (9.0 -> 13.5) find
    # it still busy and run with device 0 alone.
    fleet = [plain_device(0), plain_device(1, flops_per_s=2.5e8)]
    events, tally, workload, _ = run(world([{**ALWAYS, "count": 2}], rounds=3, target_per_round=1, over_selection=2.0),
                                     fleet=fleet)
    assert workload.aggregated() == {0: [0], 1: [0], 2: [0]}
    assert [(e.round, e.device) for e in of_kind(events, "selected")] == [(0, 0), (0, 1), (1, 0), (2, 0)]
    assert [e.t for e in of_kind(events, "round_end")] == [4.5, 9.0, 13.5]
    [late] = of_kind(events, "straggler")
    assert (late.t, late.round, late.device, late.late_s) == (10.5, 0, 1, 6.0)
    assert (late.wasted_bytes, late.wasted_compute_s) == (1_000_000, 0.0)
    assert late.wasted_energy_j == pytest.approx(2.0)
    assert ("compute_done", 1, 0) in workload.calls  # it keeps its local training
    assert (tally.stragglers, tally.wasted_bytes) == (1, 1_000_000)


def test_the_server_waits_for_a_device_to_come_online(tmp_path):
    # online from sim 5 s to 100 s: round 0 starts at 5.0 and closes at 9.5
    spec = world([trace_group(tmp_path, [[105.0, 200.0]])], target_per_round=1, rounds=2)
    events, _, _, _ = run(spec, fleet=[plain_device(0)])
    assert [e.t for e in of_kind(events, "round_start")] == [5.0, 9.5]


def test_max_sim_time_stops_the_run_mid_round():
    spec = world([ALWAYS], target_per_round=1, rounds=100, max_sim_time_s=10.0)
    events, tally, _, engine = run(spec, fleet=[plain_device(0)])
    assert [e.t for e in of_kind(events, "round_end")] == [4.5, 9.0]
    assert engine.sim_time_s == 10.0 and tally.rounds == 2 and tally.in_flight == 1


def test_a_huge_hazard_drops_everyone_during_download():
    spec = world([{**ALWAYS, "count": 5}], target_per_round=5)
    spec = spec.model_copy(update={"dropout": spec.dropout.model_copy(update={"hazard_per_hour": 3.6e7})})  # mean 0.1 ms
    events, tally, workload, _ = run(spec, fleet=[plain_device(i) for i in range(5)])
    assert {(e.phase, e.reason) for e in of_kind(events, "dropped")} == {("download", "hazard")}
    assert tally.dropouts == 5 and tally.bytes_down == 0 and workload.aggregated() == {0: []}


def test_the_engine_rejects_a_fleet_that_does_not_match_the_world():
    with pytest.raises(ValueError, match="0..1"):
        run(world([{**ALWAYS, "count": 2}]), fleet=[plain_device(0)])
