"""The cost model and the link against numbers worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import simpy

from simfed.sim.cost import bytes_moved, compute_seconds, compute_slowdown, failure_after_s, transfer_seconds
from simfed.sim.network import Link


def test_one_megabyte_at_8_mbps_with_50_ms_latency_takes_1_05_s():
    # 1e6 B * 8 bit/B / 8e6 bit/s = 1 s, plus 0.05 s
    assert transfer_seconds(1_000_000, 8e6, 0.05) == pytest.approx(1.05, abs=1e-12)


def test_link_uplink_and_downlink_apart():
    env = simpy.Environment()
    link = Link(env, down_bps=16e6, up_bps=4e6, latency_s=0.1, joules_per_byte_down=1e-6, joules_per_byte_up=3e-6)
    assert link.seconds("down", 2_000_000) == pytest.approx(0.1 + 1.0)  # 16 Mbit / 16 Mbit/s
    assert link.seconds("up", 2_000_000) == pytest.approx(0.1 + 4.0)  # 16 Mbit / 4 Mbit/s
    assert link.energy_j("up", 2_000_000) == pytest.approx(6.0)
    event = link.transfer("up", 2_000_000)
    env.run(event)
    assert env.now == pytest.approx(4.1)


def test_nothing_to_send_costs_nothing():
    assert transfer_seconds(0, 8e6, 0.05) == 0.0


def test_a_cut_transfer_counts_the_bytes_that_arrived():
    # 0.25 s latency, then 1e6 B/s: after 0.75 s, 0.5 s of payload = 500_000 B
    assert bytes_moved(1_000_000, 8e6, 0.25, 0.75) == 500_000
    assert bytes_moved(1_000_000, 8e6, 0.25, 0.2) == 0  # still in the latency
    assert bytes_moved(1_000_000, 8e6, 0.25, 99.0) == 1_000_000


def test_compute_seconds_are_flops_over_speed_times_slowdown():
    assert compute_seconds(5e11, 5e10, 1.0) == pytest.approx(10.0)
    assert compute_seconds(5e11, 5e10, 1.2) == pytest.approx(12.0)


def test_noise_and_failure_draws_depend_only_on_their_keys():
    assert compute_slowdown(7, 3, 2, 0.0) == 1.0
    first = compute_slowdown(7, 3, 2, 0.1)
    [compute_slowdown(s, d, r, 0.1) for s in range(3) for d in range(3) for r in range(3)]  # other draws between
    assert compute_slowdown(7, 3, 2, 0.1) == first  # no shared RNG state: the key alone decides
    logs = np.log([compute_slowdown(7, 3, r, 0.1) for r in range(20000)])
    assert abs(logs.mean()) < 0.003 and logs.std() == pytest.approx(0.1, rel=0.03)  # median 1, ln-sd σ
    assert compute_slowdown(7, 3, 2, 0.1) != compute_slowdown(7, 3, 3, 0.1)
    assert failure_after_s(7, 3, 2, 0.0) == math.inf


def test_failure_times_follow_the_hazard():
    # a constant hazard of 6 per hour -> mean 600 s of active time before a failure
    draws = [failure_after_s(1, d, r, 6.0) for d in range(100) for r in range(40)]
    assert sum(draws) / len(draws) == pytest.approx(600.0, rel=0.05)
