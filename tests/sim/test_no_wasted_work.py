"""A device whose scheduled failure comes before its compute ends never runs the training code."""
from __future__ import annotations

from simfed.sim.cost import failure_after_s
from tests.sim.fakes import of_kind, plain_device, run, world

HAZARD = 1800.0  # per hour: mean failure after 2 s of activity, against 3.25 s to finish compute


def test_devices_scheduled_to_drop_before_compute_end_never_train():
    # every round costs 1.25 s download + 2 s compute (fakes.plain_device): a device fails before
    # its compute ends when its drawn failure time is under 3.25 s of activity
    n, rounds = 12, 4
    spec = world([{"count": n, "tier": "phone_mid", "link": "lte"}], rounds=rounds, target_per_round=4,
                 over_selection=3.0, deadline_s=20.0)
    spec = spec.model_copy(update={"dropout": spec.dropout.model_copy(update={"hazard_per_hour": HAZARD})})
    events, tally, workload, _ = run(spec, seed=5, fleet=[plain_device(i) for i in range(n)])
    selected = [(e.device, e.round) for e in of_kind(events, "selected")]
    doomed = {(d, r) for d, r in selected if failure_after_s(5, d, r, HAZARD) < 3.25}
    trained = {(c[1], c[2]) for c in workload.calls if c[0] == "compute_done"}
    assert doomed and trained  # both kinds happen in this world
    assert not doomed & trained
    assert trained == set(selected) - doomed  # everyone else trains exactly once a round
    assert len([c for c in workload.calls if c[0] == "compute_done"]) == len(trained)
    assert {(e.device, e.round) for e in of_kind(events, "dropped") if e.phase != "upload"} == doomed
