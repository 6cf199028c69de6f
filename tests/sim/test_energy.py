"""Energy as power x time (Huang et al., MobiSys 2012), against hand computations.

The device (fakes.plain_device) has 0.25 s latency and a round of 1 MB down, 2 GFLOP at 1 GFLOP/s
(2 s), 1 MB up; here it draws 4 W computing, and its radio P = alpha * Mbps + beta with
alpha_down 0.05 W/Mbps, alpha_up 0.4 W/Mbps, beta 1.25 W, then a tail of 1 W for 10 s."""
from __future__ import annotations

import dataclasses

import pytest

from simfed.sim.energy import DeviceEnergy
from simfed.sim.fleet import build_fleet
from simfed.sim.spec import WorldSpec
from tests.sim.fakes import of_kind, plain_device, run, world

POWER = dict(compute_power_w=4.0, radio_alpha_down_w_per_mbps=0.05, radio_alpha_up_w_per_mbps=0.4,
             radio_beta_w=1.25, radio_tail_w=1.0, radio_tail_s=10.0)


def powered_world(**server):
    spec = world([{"count": 1, "tier": "phone_mid", "link": "lte"}], target_per_round=1, **server)
    return spec.model_copy(update={"energy_model": "power"})


@pytest.mark.parametrize("bps, transfer_s", [(8e6, 1.25), (2e6, 4.25)])  # fast: 0.25 + 8 Mbit / 8 Mbit/s; slow: / 2
def test_one_device_round_costs_compute_download_upload_and_tails(bps, transfer_s):
    device = dataclasses.replace(plain_device(0), down_bps=bps, up_bps=bps, **POWER)
    events, tally, _, _ = run(powered_world(), fleet=[device])
    down = 1.25 * transfer_s + 0.05 * 8 + 1.0 * min(10.0, 2.0)  # beta x time + alpha x Mbit + the tail until compute ends
    compute = 4.0 * 2.0
    up = 1.25 * transfer_s + 0.4 * 8 + 1.0 * 10.0  # the whole tail after the upload
    [d], [c], [u] = of_kind(events, "download_end"), of_kind(events, "compute_end"), of_kind(events, "upload_end")
    assert (d.seconds, u.seconds) == (transfer_s, transfer_s)
    assert d.energy_j == pytest.approx(down) and c.energy_j == pytest.approx(compute) and u.energy_j == pytest.approx(up)
    assert tally.energy_j == pytest.approx(down + compute + up)
    assert tally.energy_j == pytest.approx(26.725 if bps == 8e6 else 34.225)


def test_a_refused_late_report_pays_one_rtt_and_a_tail():
    fleet = [dataclasses.replace(plain_device(0), **POWER), dataclasses.replace(plain_device(1, 2.5e8), **POWER)]
    spec = WorldSpec.model_validate({"fleet": [{"count": 2, "tier": "phone_mid", "link": "lte"}],
                                     "compute_noise_sigma": 0.0, "energy_model": "power",
                                     "server": {"rounds": 3, "target_per_round": 1, "over_selection": 2.0,
                                                "late_reports": "refuse"}})
    events, _, _, _ = run(spec, fleet=fleet)
    [late] = of_kind(events, "straggler")
    assert late.energy_j == pytest.approx(1.25 * 0.25 + 10.0) and late.wasted_energy_j == late.energy_j


def test_a_slow_lte_uplink_pays_more_per_byte():
    # built-in LTE: alpha_up 438.39 mW/Mbps, beta 1288.04 mW; per megabit alpha + beta / rate
    w = WorldSpec.model_validate({"fleet": [{"count": 1, "tier": "phone_mid", "link": "lte"}],
                                  "link_spread_sigma": 0.0, "energy_model": "power"})
    [p] = build_fleet(w, 0)
    energy = DeviceEnergy("power", p)
    per_mbit = {rate: energy.transfer_j("up", 125_000, 1.0 / rate) for rate in (6.3, 0.3 * 6.3)}
    assert per_mbit[6.3] == pytest.approx(0.43839 + 1.28804 / 6.3)
    assert per_mbit[0.3 * 6.3] / per_mbit[6.3] == pytest.approx((438.39 + 1288.04 / 1.89) / (438.39 + 1288.04 / 6.3))
    assert per_mbit[0.3 * 6.3] / per_mbit[6.3] == pytest.approx(1.74, abs=0.01)
    assert energy.tail_j() == pytest.approx(1.06 * 11.576)  # ~12 J a transfer


def test_compute_energy_follows_the_drawn_speed_under_power_only():
    w = WorldSpec.model_validate({"fleet": [{"count": 2, "tier": "phone_mid", "link": "lte"}]})
    fast, slow = (dataclasses.replace(p, flops_per_s=f) for p, f in zip(build_fleet(w, 0), (1e11, 2.5e10)))
    for p in (fast, slow):
        seconds = 1e12 / p.flops_per_s
        assert DeviceEnergy("per_unit", p).compute_j(1e12, seconds) == pytest.approx(1e12 * 8e-11)  # J/FLOP of the tier
        assert DeviceEnergy("power", p).compute_j(1e12, seconds) == pytest.approx(4.0 * seconds)  # 4 W x its time


def test_nothing_to_send_costs_no_radio_energy():
    from tests.sim.fakes import FakeWorkload

    device = dataclasses.replace(plain_device(0), **POWER)
    events, tally, _, _ = run(powered_world(), FakeWorkload(download_bytes=0, upload_bytes=0), fleet=[device])
    assert [e.energy_j for e in events if e.kind in ("download_end", "upload_end")] == [0.0, 0.0]
    assert tally.energy_j == pytest.approx(4.0 * 2.0)  # the compute alone
