"""Invariants of the engine over random small worlds (hypothesis)."""
from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simfed.sim.profiles import load_links, load_tiers
from simfed.sim.server import selection_size
from simfed.sim.spec import WorldSpec
from tests.sim.fakes import FakeWorkload, run
from tests.sim.test_world import recompute

TERMINAL = ("upload_end", "dropped")


@st.composite
def availability(draw):
    choice = draw(st.sampled_from(["always_on", "always_on", "markov", "markov", "diurnal"]))
    if choice == "always_on":
        return {"kind": "always_on"}
    if choice == "diurnal":  # the built-in FLASH profile (solved once, cached), at any hour
        return {"kind": "diurnal", "start_hour": draw(st.floats(0, 23.9))}
    return {"kind": "markov", "mean_on_s": draw(st.floats(5, 3000)), "mean_off_s": draw(st.floats(5, 3000))}


@st.composite
def scenarios(draw):
    groups = draw(st.lists(st.fixed_dictionaries({
        "count": st.integers(1, 6), "tier": st.sampled_from(sorted(load_tiers())),
        "link": st.sampled_from(sorted(load_links())), "availability": availability(),
    }), min_size=1, max_size=3))
    spec = WorldSpec.model_validate({
        "fleet": groups,
        "dropout": {"hazard_per_hour": draw(st.sampled_from([0.0, 1.0, 30.0, 300.0]))},
        "server": {"rounds": draw(st.integers(1, 6)), "target_per_round": draw(st.integers(1, 6)),
                   "over_selection": draw(st.floats(1.0, 2.5)), "deadline_s": draw(st.floats(1.0, 500.0)),
                   "max_sim_time_s": draw(st.none() | st.floats(10.0, 5000.0))},
        "compute_noise_sigma": draw(st.floats(0.0, 0.5)),
    })
    workload = FakeWorkload(download_bytes=draw(st.integers(0, 50_000_000)),
                            upload_bytes=draw(st.integers(0, 50_000_000)), flops=draw(st.floats(0, 1e13)))
    return spec, workload, draw(st.integers(0, 2**32))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_engine_invariants(case):
    spec, workload, seed = case
    events, tally, workload, engine = run(spec, workload, seed=seed)
    times = [e.t for e in events]
    assert times == sorted(times)  # time never decreases

    target, cap = spec.server.target_per_round, selection_size(spec.server.over_selection, spec.server.target_per_round)
    starts = {e.round: e for e in events if e.kind == "round_start"}
    merged = {e.round: set(e.devices) for e in events if e.kind == "aggregated"}
    closes = {e.round: e.t for e in events if e.kind == "round_end"}
    for r, start in starts.items():
        assert 1 <= start.selected <= min(cap, start.eligible) and start.target <= target
        if r in merged:
            assert len(merged[r]) <= start.target
            assert start.t <= closes[r] <= start.t + spec.server.deadline_s + 1e-9

    # every selected device ends in exactly one of aggregated / straggler / dropped / unfinished (the
    # run stopped first),
    # and is never selected while it still works on an earlier round
    working: dict[int, int] = {}
    outcome: dict[tuple[int, int], list[str]] = {}
    reported = {(e.device, e.round) for e in events if e.kind == "upload_end"}
    for e in events:
        key = (e.device, e.round)
        if e.kind == "selected":
            assert e.device not in working
            working[e.device] = e.round
            outcome[key] = []
        elif e.kind in TERMINAL or (e.kind == "straggler" and e.reason == "refused"):  # refused: never uploads
            assert working.pop(e.device) == e.round
        if e.kind in ("dropped", "straggler"):
            outcome[key].append(e.kind)
        if e.kind == "aggregated":
            for d in e.devices:
                outcome[(d, e.round)].append("aggregated")
    for (d, r), ends in outcome.items():
        assert len(ends) <= 1, (d, r, ends)
        if not ends:  # unfinished: still working, or reported to a round that never closed
            assert working.get(d) == r or (r not in merged and (d, r) in reported)

    # the learning side hears exactly what the stream says
    computed = {(e.device, e.round) for e in events if e.kind == "compute_end"}
    assert {(c[1], c[2]) for c in workload.calls if c[0] == "compute_done"} == computed
    assert {c[1]: set(c[2]) for c in workload.calls if c[0] == "aggregate"} == merged
    if spec.server.max_sim_time_s is None:
        assert tally.rounds + tally.abandoned_rounds == spec.server.rounds
    else:
        assert engine.sim_time_s <= spec.server.max_sim_time_s + 1e-9

    # the tally agrees with the JSON stream, and waste never exceeds spend
    expected = recompute(json.loads(json.dumps([e.to_dict() for e in events])))
    summary = tally.as_summary()
    for name, value in expected.items():
        assert math.isclose(summary[name], value, rel_tol=1e-9, abs_tol=1e-6), name
    assert tally.wasted_bytes <= tally.bytes_up + tally.bytes_down
    assert tally.wasted_energy_j <= tally.energy_j * (1 + 1e-9) + 1e-12
