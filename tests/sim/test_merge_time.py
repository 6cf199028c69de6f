"""The server's merge takes time (server.flops_per_s), against times worked out by hand.

fakes.plain_device: 8 Mbit/s both ways, 0.25 s latency; a round costs 1 MB down, 2 GFLOP, 1 MB
up, so at 1 GFLOP/s a device has downloaded at 1.25 s, computed at 3.25 s and uploaded at 4.5 s.
The merge here costs 3e9 FLOPs per device merged; at 1e9 FLOP/s one device's merge takes 3 s.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from simfed.sim.spec import WorldSpec
from tests.sim.fakes import FakeWorkload, of_kind, plain_device, run, world

ALWAYS = {"count": 1, "tier": "phone_mid", "link": "lte"}


@dataclass
class MergingWorkload(FakeWorkload):
    merge_flops_per_device: float = 3e9

    def aggregation_flops(self, devices: list[int]) -> float:
        self.calls.append(("aggregation_flops", list(devices)))
        return self.merge_flops_per_device * len(devices)


def with_server(spec: WorldSpec, **server) -> WorldSpec:
    return spec.model_copy(update={"server": spec.server.model_copy(update=server)})


@pytest.mark.parametrize("flops_per_s, merge_s", [(1e9, 3.0), (0.0, 0.0)])
def test_a_sync_round_ends_when_its_merge_does(flops_per_s, merge_s):
    spec = with_server(world([ALWAYS], rounds=2, target_per_round=1, deadline_s=100.0), flops_per_s=flops_per_s)
    events, tally, workload, _ = run(spec, workload=MergingWorkload(), fleet=[plain_device(0)])
    # round 0: the report arrives at 4.5 s, the merge ends at 4.5 + 3 = 7.5 s, round 1 starts there
    merged = of_kind(events, "aggregated")
    assert [e.t for e in merged] == [4.5 + merge_s, 2 * (4.5 + merge_s)]
    assert [e.t for e in of_kind(events, "round_start")] == [0.0, 4.5 + merge_s]
    assert [e.duration_s for e in of_kind(events, "round_end")] == [4.5 + merge_s] * 2
    assert merged[0].seconds == (merge_s or None) and merged[0].flops == (3e9 if merge_s else None)
    assert tally.server_compute_s == 2 * merge_s and tally.server_flops == (6e9 if merge_s else 0.0)
    if not merge_s:  # nothing asks for the merge cost when merges are instantaneous
        assert not [c for c in workload.calls if c[0] == "aggregation_flops"]


def test_a_workload_without_a_merge_cost_merges_instantly():
    spec = with_server(world([ALWAYS], rounds=1, target_per_round=1, deadline_s=100.0), flops_per_s=1e9)
    events, tally, _, _ = run(spec, fleet=[plain_device(0)])  # FakeWorkload: no aggregation_flops
    assert of_kind(events, "aggregated")[0].t == 4.5 and tally.server_compute_s == 0.0


def test_an_async_merge_delays_the_next_version_and_holds_its_device():
    # fedasync, concurrency 1, two devices: the first arrival (4.5 s) is merged at 7.5 s. Its
    # device is held meanwhile, so the slot freed at 4.5 s goes to the other device, which
    # downloads version 0 (version 1 is not published yet) and arrives at 4.5 + 4.5 = 9 s with
    # staleness 1; its merge ends at 12 s
    spec = WorldSpec.model_validate({
        "fleet": [{**ALWAYS, "count": 2}], "compute_noise_sigma": 0.0,
        "server": {"policy": "fedasync", "rounds": 2, "concurrency": 1, "flops_per_s": 1e9},
    })
    events, tally, workload, _ = run(spec, workload=MergingWorkload(), fleet=[plain_device(0), plain_device(1)])
    merged = of_kind(events, "aggregated")
    assert [(e.t, e.round, e.stalenesses) for e in merged] == [(7.5, 0, (0,)), (12.0, 1, (1,))]
    selected = of_kind(events, "selected")
    assert [e.t for e in selected[:2]] == [0.0, 4.5] and selected[0].device != selected[1].device
    assert [c[1] for c in workload.calls if c[0] == "aggregate"] == [0, 1]
    assert tally.server_compute_s == 6.0


def test_async_arrivals_during_a_merge_fill_the_next_buffer_and_merges_queue():
    # fedbuff K = 1 is fedasync; here concurrency 2 and a buffer of 1: both devices arrive at 4.5 s.
    # The first merge runs 4.5-7.5 s, the second is set aside and runs after it, 7.5-10.5 s; the
    # second update's staleness is 0 (no version was published when it arrived)
    spec = WorldSpec.model_validate({
        "fleet": [{**ALWAYS, "count": 2}], "compute_noise_sigma": 0.0,
        "server": {"policy": "fedbuff", "buffer_size": 1, "rounds": 2, "concurrency": 2, "flops_per_s": 1e9},
    })
    events, tally, _, _ = run(spec, workload=MergingWorkload(), fleet=[plain_device(0), plain_device(1)])
    merged = of_kind(events, "aggregated")
    assert [(e.t, e.round, e.stalenesses) for e in merged] == [(7.5, 0, (0,)), (10.5, 1, (0,))]
    assert [e.devices for e in merged] == [(0,), (1,)]
    assert tally.rounds == 2 and tally.server_compute_s == 6.0
