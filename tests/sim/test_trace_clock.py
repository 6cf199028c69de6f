"""Trace replay on the trace's one clock: a hand-made two-day trace, and the FLASH sample's day."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from simfed.sim.availability import read_trace, timeline
from simfed.sim.spec import TraceSpec
from tests.sim.fakes import of_kind, plain_device, run, world

H = 3600.0
DAY = 86400.0


def two_day_trace(tmp_path) -> str:
    """Client "a" recorded from day 0 00:00 for two days, ready 01:00-02:00 on day 0 and 05:00-06:00
    on day 1; client "b" recorded from day 0 12:00 for two days, ready 10:00-11:00 on day 1."""
    path = tmp_path / "two_days.json"
    path.write_text(json.dumps({
        "a": {"trace_start": 0.0, "trace_end": 2 * DAY, "ready_time": [[1 * H, 2 * H], [DAY + 5 * H, DAY + 6 * H]]},
        "b": {"trace_start": 12 * H, "trace_end": 12 * H + 2 * DAY, "ready_time": [[DAY + 10 * H, DAY + 11 * H]]},
    }))
    return str(path)


def online_spans(spec: TraceSpec, device: int, until_s: float, seed: int = 0) -> list[tuple[float, float]]:
    """(start, end) of the online periods before `until_s`, sim seconds, touching periods merged."""
    t, spans = 0.0, []
    for online, duration in timeline(spec, seed, device).periods():
        if t >= until_s:
            break
        if online:
            if spans and spans[-1][1] == t:
                spans[-1] = (spans[-1][0], t + duration)
            else:
                spans.append((t, t + duration))
        t += duration
    return spans


def spec_for(path: str, **kw) -> TraceSpec:
    return TraceSpec(kind="trace", path=path, **kw)


def clients_of(spec: TraceSpec) -> dict[int, str]:
    """device -> the key of the client it replays (keys sorted: index 0 = "a", 1 = "b")."""
    return {d: "ab"[timeline(spec, 0, d).client] for d in range(2)}


def test_on_the_common_clock_each_device_is_online_exactly_when_its_client_was(tmp_path):
    spec = spec_for(two_day_trace(tmp_path))  # T0 = earliest start = day 0 00:00
    who = clients_of(spec)
    assert sorted(who.values()) == ["a", "b"]  # distinct clients: the trace has enough of them
    expected = {
        # a: its own two days, then again every two days (its window is two whole days)
        "a": [(1 * H, 2 * H), (29 * H, 30 * H), (49 * H, 50 * H), (77 * H, 78 * H)],
        # b: recorded from 12:00 on day 0; day 1 10:00 is sim 34 h, and every two days after
        "b": [(34 * H, 35 * H), (82 * H, 83 * H)],
    }
    for device, client in who.items():
        assert online_spans(spec, device, 96 * H) == expected[client]


def test_start_hour_moves_sim_time_zero_to_that_hour_of_the_traces_clock(tmp_path):
    spec = spec_for(two_day_trace(tmp_path), start_hour=5.0)  # sim 0 = day 0 05:00
    for device, client in clients_of(spec).items():
        spans = online_spans(spec, device, 96 * H)
        if client == "a":  # 01:00 on day 0 is before sim 0; day 1 05:00 = sim 24 h; day 2 01:00 (= day 0) = sim 44 h
            assert spans == [(24 * H, 25 * H), (44 * H, 45 * H), (72 * H, 73 * H), (92 * H, 93 * H)]
        else:  # day 1 10:00 = sim 29 h
            assert spans == [(29 * H, 30 * H), (77 * H, 78 * H)]
        # the hour of day is the trace's: every online period starts at the hour the trace recorded
        hours = {round(((s + 5 * H) % DAY) / H) for s, _ in spans}
        assert hours == ({1, 5} if client == "a" else {10})


def test_the_own_clock_is_the_old_replay(tmp_path):
    spec = spec_for(two_day_trace(tmp_path), clock="own", clients="independent")
    for device in range(2):
        client = "ab"[timeline(spec, 0, device).client]
        spans = online_spans(spec, device, 4 * DAY)
        if client == "a":
            assert spans[:2] == [(1 * H, 2 * H), (29 * H, 30 * H)]
        else:  # shifted to its own start: day 1 10:00 is 22 h after its 12:00 start
            assert spans[:2] == [(22 * H, 23 * H), (70 * H, 71 * H)]


def test_a_client_shorter_than_a_day_is_offline_for_the_rest_of_the_day(tmp_path):
    path = tmp_path / "short.json"
    path.write_text(json.dumps({"x": {"trace_start": 0.0, "trace_end": 6 * H, "ready_time": [[2 * H, 8 * H]]}}))
    spans = online_spans(spec_for(str(path)), 0, 3 * DAY)
    assert spans == [(2 * H, 6 * H), (26 * H, 30 * H), (50 * H, 54 * H)]


def test_start_hour_needs_the_common_clock(tmp_path):
    with pytest.raises(ValueError, match="start_hour needs clock: common"):
        spec_for(two_day_trace(tmp_path), clock="own", start_hour=3.0)


def test_devices_get_distinct_clients_then_a_fresh_permutation(tmp_path):
    path = tmp_path / "many.json"
    path.write_text(json.dumps({str(k): {"trace_start": 0.0, "trace_end": DAY, "ready_time": [[k, k + 1.0]]}
                                for k in range(10)}))
    spec = spec_for(str(path))
    picks = [timeline(spec, 3, d).client for d in range(25)]
    assert sorted(picks[:10]) == list(range(10)) and sorted(picks[10:20]) == list(range(10))
    assert len(set(picks[20:])) == 5
    independent = [timeline(spec_for(str(path), clients="independent"), 3, d).client for d in range(25)]
    assert len(set(independent)) < 10  # 25 draws with replacement from 10 repeat (P(all distinct) = 0)


def test_the_engine_selects_a_trace_device_only_inside_its_clients_hours(tmp_path):
    # one device replaying "a" or "b" (which: the permutation), always-on fillers not needed:
    # rounds of 1 s work, so each online hour gives rounds that start inside it
    spec = world([{"count": 2, "tier": "phone_mid", "link": "lte",
                   "availability": {"kind": "trace", "path": two_day_trace(tmp_path)}}],
                 target_per_round=1, over_selection=1.0, rounds=4, deadline_s=10.0)
    events, tally, _, _ = run(spec, fleet=[plain_device(0), plain_device(1)])
    trace_spec = spec.fleet[0].availability
    for e in of_kind(events, "selected"):
        spans = online_spans(trace_spec, e.device, 100 * H)
        assert any(s <= e.t < end for s, end in spans), (e.t, e.device)
    assert of_kind(events, "selected")[0].t == 1 * H  # nobody is ready before "a"'s 01:00


# ../shared beside the checkout (as laid for sessions and CI); the trace is never committed
FLASH = Path(__file__).resolve().parents[2].parent / "shared" / "traces" / "availability_flash_1000.json"


@pytest.mark.skipif(not FLASH.exists(), reason="FLASH trace not available here")
def test_on_the_common_clock_the_flash_fleet_follows_the_traces_day():
    """400 devices over two simulated days: the share online by simulated hour (start_hour 0)
    follows the trace's own share by hour of its clock; the own clock flattens and shifts it."""
    share = read_trace(str(FLASH)).online_share_by_hour()
    assert share.argmax() == 4 and share.argmin() == 13  # the FLASH sample: peak 04:00, trough 13:00

    def online_by_hour(spec: TraceSpec) -> np.ndarray:
        grid = (np.arange(48 * 12) + 0.5) * 300.0  # every 5 min over two days
        online = np.zeros(len(grid))
        for d in range(400):
            t, it = 0.0, timeline(spec, 0, d).periods()
            i = 0
            for on, duration in it:
                end = t + duration
                while i < len(grid) and grid[i] < end:
                    online[i] += on
                    i += 1
                t = end
                if i == len(grid) or math.isinf(end):
                    break
        return online.reshape(48, 12).mean(axis=1) / 400

    common = online_by_hour(TraceSpec(kind="trace", path=str(FLASH), start_hour=0.0))
    own = online_by_hour(TraceSpec(kind="trace", path=str(FLASH), clock="own", clients="independent"))
    target = np.tile(share, 2)
    assert np.corrcoef(common, target)[0, 1] >= 0.9
    assert np.corrcoef(own, target)[0, 1] < np.corrcoef(common, target)[0, 1]
