"""`simfed calibrate`: timed real steps -> effective FLOP/s -> a user tier scenarios can use.

Timing accuracy itself (prediction within 10% on SmolLM2) needs an idle host and is reported in
the issue, not asserted here; these tests check the plumbing on tiny-gpt2.
"""
from __future__ import annotations

import pytest

from simfed.cli import main
from simfed.learn.flops import ModelDims, step_flops
from simfed.run import calibrate as cal
from simfed.sim.profiles import USER_PROFILES_ENV, _load_tiers, load_tiers
from simfed.sim.spec import WorldSpec


@pytest.fixture(scope="module")
def tiny():
    return cal.load_adapted("tiny-gpt2", "cpu", threads=2)


@pytest.mark.parametrize("kind, rank, experts", [("comigs", 8, 2), ("hetlora", 16, 1), ("fedavg", 8, 1)])
def test_measure_times_real_steps_and_counts_their_flops(tiny, kind, rank, experts):
    m = cal.measure(tiny, "tiny-gpt2", kind, rank, steps=3, warmup=1, batch_size=2, seq_len=16)
    shape = cal.method_shape(kind, rank)
    assert shape.n_experts == experts and shape.mlp_rank == rank
    assert m.flops == step_flops(ModelDims.of(tiny), shape, 2, 16, "experts")
    assert len(m.times_s) == 3 and all(t > 0 for t in m.times_s)
    assert m.flops_per_s == pytest.approx(m.flops / m.median_s)
    predicted, measured, error = cal.check_prediction(cal.fit_host([m]), m)
    assert predicted == pytest.approx(measured) and error == pytest.approx(0.0, abs=1e-12)


def test_calibrate_writes_a_user_tier_scenarios_can_use(tmp_path, monkeypatch, capsys):
    out = tmp_path / "tiers.yaml"
    assert main(["calibrate", "--model", "tiny-gpt2", "--method", "fedavg", "--steps", "2", "--warmup", "1",
                 "--batch-size", "2", "--seq-len", "16", "--device", "cpu", "--out", str(out),
                 "--tier", "my_box"]) == 0
    assert "GFLOP/s effective" in capsys.readouterr().out
    monkeypatch.setenv(USER_PROFILES_ENV, str(out))
    tiers = load_tiers()
    assert tiers["my_box"].flops_per_s > 0 and tiers["my_box"].sigma == 0.0
    assert "simfed calibrate" in tiers["my_box"].source
    assert {"phone_low", "laptop"} <= set(tiers)  # built-ins still there, unchanged
    world = WorldSpec.model_validate({"fleet": [{"count": 2, "tier": "my_box", "link": "wifi_home"}]})
    assert world.fleet[0].tier == "my_box"
    # a second calibration keeps the file's other tiers
    basis = [cal.Measurement("m", "fedavg", 8, 1, 1, "cpu", 2, 1e9, (0.5,))]
    cal.write_tier(out, "other", cal.tier_row(cal.fit_host(basis), basis))
    _load_tiers.cache_clear()  # the file changed under the same name
    assert {"my_box", "other"} <= set(load_tiers()) and load_tiers()["other"].flops_per_s == 2e9


def test_a_user_tier_may_not_replace_a_built_in(tmp_path, monkeypatch):
    path = tmp_path / "tiers.yaml"
    path.write_text("laptop:\n  flops_per_s: 1.0e+9\n  memory_gb: 8\n  joules_per_flop: 1.0e-11\n"
                    "  sigma: 0\n  source: x\n")
    monkeypatch.setenv(USER_PROFILES_ENV, str(path))
    with pytest.raises(ValueError, match="built in"):
        load_tiers()
    monkeypatch.delenv(USER_PROFILES_ENV)
    assert load_tiers()["laptop"].flops_per_s == 2.5e12


def test_two_shapes_fit_flops_and_activation_bandwidth_exactly():
    """Step times made from known F and B are fitted back exactly, and a third shape predicted."""
    f, b = 2.0e11, 8.0e9
    def m(kind, flops, act):
        return cal.Measurement("m", kind, 8, 4, 64, "cpu", 2, flops, (flops / f + act / b,) * 3, act)
    fit = cal.fit_host([m("fedavg", 3.0e10, 2.0e8), m("comigs-1g3s", 3.3e10, 6.0e8)])
    assert fit.flops_per_s == pytest.approx(f, rel=1e-9)
    assert fit.activation_bytes_per_s == pytest.approx(b, rel=1e-9)
    held_out = m("comigs", 3.1e10, 3.5e8)
    predicted, measured, error = cal.check_prediction(fit, held_out)
    assert predicted == pytest.approx(measured, rel=1e-9)
    row = cal.tier_row(fit, [held_out])
    assert row["activation_bytes_per_s"] == pytest.approx(b, rel=1e-3)


def test_one_shape_kind_fits_flops_alone():
    basis = [cal.Measurement("m", "fedavg", 8, 4, 64, "cpu", 2, 1e9, (0.5,), 1e8)]
    fit = cal.fit_host(basis)
    assert fit.flops_per_s == pytest.approx(2e9) and fit.activation_bytes_per_s == 0.0
    assert "activation_bytes_per_s" not in cal.tier_row(fit, basis)


def test_a_calibrated_bandwidth_adds_activation_time_in_the_simulated_world():
    from simfed.sim.cost import compute_seconds
    assert compute_seconds(2e9, 1e9, 1.0) == 2.0
    assert compute_seconds(2e9, 1e9, 1.0, 4e8, 2e8) == pytest.approx(4.0)
    assert compute_seconds(2e9, 1e9, 1.5, 4e8, 0.0) == pytest.approx(3.0)  # no bandwidth: FLOPs alone


def test_a_tier_with_an_activation_bandwidth_reaches_every_device(tmp_path, monkeypatch):
    from simfed.sim.fleet import build_fleet
    path = tmp_path / "tiers.yaml"
    path.write_text("box:\n  flops_per_s: 1.0e+11\n  activation_bytes_per_s: 5.0e+9\n  memory_gb: 8\n"
                    "  joules_per_flop: 1.0e-11\n  sigma: 0.2\n  source: x\n")
    monkeypatch.setenv(USER_PROFILES_ENV, str(path))
    _load_tiers.cache_clear()
    world = WorldSpec.model_validate({"fleet": [{"count": 3, "tier": "box", "link": "wifi_home"}]})
    for device in build_fleet(world, 0):
        # the device's compute spread scales both terms alike
        assert device.activation_bytes_per_s / 5.0e9 == pytest.approx(device.flops_per_s / 1.0e11)
    _load_tiers.cache_clear()
