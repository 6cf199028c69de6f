"""Common random numbers and determinism; the fleet; availability timelines; Tally vs the stream."""
from __future__ import annotations

import itertools
import json
import math
from collections import defaultdict
from pathlib import Path

import pytest

from simfed.sim.availability import timeline
from simfed.sim.fleet import build_fleet
from simfed.sim.spec import MarkovSpec, TraceSpec, WorldSpec
from tests.sim.fakes import FakeWorkload, of_kind, run

BUSY_WORLD = WorldSpec.model_validate({
    "fleet": [
        {"count": 12, "tier": "phone_low", "link": "lte",
         "availability": {"kind": "markov", "mean_on_s": 600, "mean_off_s": 300}},
        {"count": 8, "tier": "phone_flagship", "link": "5g",
         "availability": {"kind": "markov", "mean_on_s": 900, "mean_off_s": 900}},
        {"count": 4, "tier": "laptop", "link": "wifi_home"},
    ],
    "dropout": {"hazard_per_hour": 30.0},
    "server": {"rounds": 20, "target_per_round": 6, "over_selection": 1.5, "deadline_s": 120},
})
SMALL = FakeWorkload(download_bytes=2_000_000, upload_bytes=1_000_000, flops=2e11)
LARGE = FakeWorkload(download_bytes=20_000_000, upload_bytes=10_000_000, flops=6e11)


def test_same_seed_gives_identical_event_streams():
    a, _, _, _ = run(BUSY_WORLD, FakeWorkload(**vars(SMALL) | {"calls": []}), seed=3)
    b, _, _, _ = run(BUSY_WORLD, FakeWorkload(**vars(SMALL) | {"calls": []}), seed=3)
    assert [e.to_dict() for e in a] == [e.to_dict() for e in b]
    c, _, _, _ = run(BUSY_WORLD, FakeWorkload(**vars(SMALL) | {"calls": []}), seed=4)
    assert [e.to_dict() for e in a] != [e.to_dict() for e in c]


def test_the_stream_exercises_every_kind():
    events, _, _, _ = run(BUSY_WORLD, FakeWorkload(**vars(LARGE) | {"calls": []}), seed=3)
    assert {e.kind for e in events} == {
        "round_start", "selected", "download_start", "download_end", "compute_start", "compute_end",
        "upload_start", "upload_end", "dropped", "straggler", "aggregated", "round_end"}


def test_different_payloads_face_the_same_world():
    small, _, _, eng_small = run(BUSY_WORLD, FakeWorkload(**vars(SMALL) | {"calls": []}), seed=5)
    large, _, _, eng_large = run(BUSY_WORLD, FakeWorkload(**vars(LARGE) | {"calls": []}), seed=5)
    assert eng_small.fleet == eng_large.fleet == build_fleet(BUSY_WORLD, 5)
    # the first round starts at the same moment with the same devices
    assert [e.device for e in of_kind(small, "selected") if e.round == 0] == \
           [e.device for e in of_kind(large, "selected") if e.round == 0]

    # the same (device, round) gets the same compute slowdown: planned_s * FLOP/s / FLOPs
    def slowdowns(events, workload):
        speed = {p.device_id: p.flops_per_s for p in eng_small.fleet}
        return {(e.device, e.round): e.planned_s * speed[e.device] / workload.flops
                for e in of_kind(events, "compute_start")}
    s, l = slowdowns(small, SMALL), slowdowns(large, LARGE)
    shared = set(s) & set(l)
    assert len(shared) >= 10 and all(s[k] == pytest.approx(l[k], rel=1e-12) for k in shared)

    # a hazard failure comes after the same active time for a (device, round), whatever the payload
    def failures(events):
        begun = {(e.device, e.round): e.t for e in of_kind(events, "download_start")}
        return {(e.device, e.round): e.t - begun[(e.device, e.round)] for e in of_kind(events, "dropped")
                if e.reason == "hazard"}
    fs, fl = failures(small), failures(large)
    assert all(fs[k] == pytest.approx(fl[k]) for k in set(fs) & set(fl))
    assert len(fl) > len(fs)  # bigger payloads, longer exposure, more failures

    # going offline mid-round happens exactly at a transition of the device's own timeline
    for events in (small, large):
        for e in of_kind(events, "dropped"):
            if e.reason == "offline":
                assert e.t in off_transitions(e.device, 5, until=e.t + 1)


def off_transitions(device: int, seed: int, until: float) -> set[float]:
    spec = BUSY_WORLD.fleet[0 if device < 12 else 1].availability
    t, out = 0.0, set()
    for online, duration in timeline(spec, seed, device).periods():
        if not online and t > 0:
            out.add(t)
        t += duration
        if t > until:
            return out
    return out


def test_fleet_draws_are_per_device_and_medians_hold_without_spread():
    flat = BUSY_WORLD.model_copy(update={"device_spread_sigma": 0.0, "link_spread_sigma": 0.0})
    fleet = build_fleet(flat, 0)
    assert [p.device_id for p in fleet] == list(range(24))
    assert fleet[0].flops_per_s == 1e10 and fleet[0].down_bps == 21e6 and fleet[0].up_bps == 6.3e6
    assert fleet[0].latency_s == 0.055 and fleet[0].memory_bytes in (3e9, 4e9)
    assert fleet[20].tier == "laptop" and fleet[20].link == "wifi_home" and fleet[20].flops_per_s == 2.5e12
    spread = build_fleet(BUSY_WORLD, 0)
    assert len({p.flops_per_s for p in spread}) == 24
    # the same device keeps its luck when another group changes
    bigger = BUSY_WORLD.model_copy(update={"fleet": [*BUSY_WORLD.fleet[:2], BUSY_WORLD.fleet[2].model_copy(update={"count": 9})]})
    assert build_fleet(bigger, 0)[:24] == spread


def test_group_overrides_replace_the_medians():
    w = WorldSpec.model_validate({"fleet": [{"count": 1, "tier": "phone_mid", "link": "lte", "flops_per_s": 1e9,
                                             "down_mbps": 8, "up_mbps": 2, "latency_s": 0.1}],
                                  "device_spread_sigma": 0, "link_spread_sigma": 0})
    [p] = build_fleet(w, 0)
    assert (p.flops_per_s, p.down_bps, p.up_bps, p.latency_s) == (1e9, 8e6, 2e6, 0.1)


def test_markov_timeline_spends_the_stationary_share_online():
    spec = MarkovSpec(kind="markov", mean_on_s=100.0, mean_off_s=300.0)
    starts_on = [next(timeline(spec, 1, d).periods())[0] for d in range(2000)]
    assert sum(starts_on) / 2000 == pytest.approx(0.25, abs=0.03)
    on = total = 0.0
    for online, duration in itertools.islice(timeline(spec, 1, 0).periods(), 20000):
        on, total = on + online * duration, total + duration
    assert on / total == pytest.approx(0.25, abs=0.02)
    # lazily drawn, so a prefix is the same however far one reads
    first = list(itertools.islice(timeline(spec, 1, 0).periods(), 5))
    assert first == list(itertools.islice(timeline(spec, 1, 0).periods(), 50))[:5]


def test_trace_replay_merges_shifts_and_repeats(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"a": {"trace_start": 1000.0, "trace_end": 1100.0,
                                      "ready_time": [[1010.0, 1020.0], [1015.0, 1030.0], [1050.0, 1050.0],
                                                     [1090.0, 1100.0]]}}))
    periods = list(itertools.islice(timeline(TraceSpec(kind="trace", path=str(path), clock="own"), 0, 0).periods(), 7))
    # on 10-30, on 90-100 then (next cycle) on 100-120 ...
    assert periods == [(False, 10.0), (True, 20.0), (False, 60.0), (True, 10.0), (False, 10.0), (True, 20.0),
                       (False, 60.0)]
    # on the common clock a 100 s client repeats once a day: the rest of the day is offline
    common = list(itertools.islice(timeline(TraceSpec(kind="trace", path=str(path)), 0, 0).periods(), 5))
    assert common == [(False, 10.0), (True, 20.0), (False, 60.0), (True, 10.0), (False, 86400.0 - 100.0 + 10.0)]


# ../shared beside the checkout (as laid for sessions and CI); the trace is never committed
FLASH = Path(__file__).resolve().parents[2].parent / "shared" / "traces" / "availability_flash_1000.json"


@pytest.mark.skipif(not FLASH.exists(), reason="FLASH trace not available here")
def test_the_flash_trace_is_mostly_offline():
    spec = TraceSpec(kind="trace", path=str(FLASH))
    on = total = 0.0
    for d in range(200):
        t = 0.0
        for online, duration in timeline(spec, 0, d).periods():
            step = min(duration, 86400.0 - t)
            on, total, t = on + online * step, total + step, t + step
            if t >= 86400.0:
                break
    assert 0.02 < on / total < 0.3  # FLASH: ~9% of devices ready at a given hour


def recompute(stream: list[dict]) -> dict:
    """Totals from the JSON event stream alone, by the rules of events.py, not by Tally's code."""
    out = defaultdict(float)
    spent = defaultdict(lambda: [0.0, 0.0, 0.0])  # (device, round) -> bytes, compute_s, energy_j
    for e in stream:
        key = (e["device"], e["round"])
        if e["kind"] in ("download_end", "upload_end"):
            out["bytes_down" if e["kind"] == "download_end" else "bytes_up"] += e["bytes"]
            spent[key][0] += e["bytes"]
        if e["kind"] == "compute_end":
            spent[key][1] += e["seconds"]
        if e["kind"] == "dropped":
            direction = {"download": "bytes_down", "upload": "bytes_up"}.get(e["phase"])
            if direction:
                out[direction] += e["bytes"]
            b, c, j = spent[key]
            out["wasted_bytes"] += b + e.get("bytes", 0)
            out["wasted_compute_s"] += c + (e["seconds"] if e["phase"] == "compute" else 0)
            out["wasted_energy_j"] += j + e["energy_j"]
            out["dropouts"] += 1
        if e["kind"] in ("straggler", "stale") and e.get("reason") == "refused":  # late_reports: refuse
            out["wasted_energy_j"] += e["energy_j"]  # the check-in's round trip; nothing uploaded
            out["stragglers"] += 1
        elif e["kind"] in ("straggler", "stale"):
            upload = [x for x in stream if x["kind"] == "upload_end" and (x["device"], x["round"]) == key][0]
            out["wasted_bytes"] += upload["bytes"]
            out["wasted_energy_j"] += upload["energy_j"]
            out["stragglers" if e["kind"] == "straggler" else "stale"] += 1
        if "energy_j" in e:
            out["energy_j"] += e["energy_j"]
            spent[key][2] += e["energy_j"]
        if e["kind"] == "aggregated":
            out["updates_aggregated"] += len(e["devices"])
        if e["kind"] == "round_end":
            out["abandoned_rounds" if e.get("reason") == "abandoned" else "rounds"] += 1
        out["sim_time_s"] = max(out["sim_time_s"], e["t"])
    return dict(out)


@pytest.mark.parametrize("workload", [SMALL, LARGE])
def test_tally_equals_a_recomputation_from_the_json_stream(workload):
    events, tally, _, _ = run(BUSY_WORLD, FakeWorkload(**vars(workload) | {"calls": []}), seed=11)
    stream = json.loads(json.dumps([e.to_dict() for e in events]))
    expected = recompute(stream)
    summary = tally.as_summary()
    assert expected["dropouts"] > 0 and expected["stragglers"] > 0
    for name, value in expected.items():
        assert summary[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name


def test_to_dict_keeps_only_what_is_set():
    events, _, _, _ = run(BUSY_WORLD, FakeWorkload(**vars(SMALL) | {"calls": []}), seed=1)
    d = of_kind(events, "selected")[0].to_dict()
    assert set(d) == {"t", "kind", "round", "device"}
    agg = of_kind(events, "aggregated")[0].to_dict()
    assert agg["device"] is None and isinstance(agg["devices"], list) and agg["count"] == len(agg["devices"])
    assert all(not math.isnan(v) for e in events for v in e.to_dict().values() if isinstance(v, float))
