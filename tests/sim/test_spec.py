"""The world spec rejects what cannot be simulated, with the key path; profiles carry sources."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from simfed.sim.profiles import load_links, load_tiers
from simfed.sim.spec import MarkovSpec, WorldSpec

GROUP = {"count": 2, "tier": "phone_mid", "link": "lte"}


def problems(doc: dict) -> dict[tuple, str]:
    with pytest.raises(ValidationError) as info:
        WorldSpec.model_validate(doc)
    return {tuple(e["loc"]): e["msg"] for e in info.value.errors()}


def test_minimal_world_gets_defaults():
    w = WorldSpec.model_validate({"fleet": [GROUP]})
    assert w.n_devices == 2 and w.server.over_selection == 1.3 and w.compute_noise_sigma == 0.1
    assert w.fleet[0].availability.kind == "always_on" and w.dropout.hazard_per_hour == 0


def test_unknown_tier_names_the_choices():
    found = problems({"fleet": [GROUP, {**GROUP, "tier": "phone_medium"}]})
    assert found == {("fleet", 1, "tier"): "Value error, unknown tier 'phone_medium'; choose one of: "
                                           "jetson_orin, laptop, phone_flagship, phone_low, phone_mid"}


def test_unknown_link_names_the_choices():
    found = problems({"fleet": [{**GROUP, "link": "3g"}]})
    assert found == {("fleet", 0, "link"): "Value error, unknown link '3g'; choose one of: "
                                           "5g, lte, wifi_home, wifi_phone"}


@pytest.mark.parametrize("bad, loc", [
    ({"fleet": [{**GROUP, "up_mbps": -5}]}, ("fleet", 0, "up_mbps")),
    ({"fleet": [{**GROUP, "down_mbps": 0}]}, ("fleet", 0, "down_mbps")),
    ({"fleet": [GROUP], "server": {"deadline_s": 0}}, ("server", "deadline_s")),
    ({"fleet": [GROUP], "server": {"over_selection": 0.9}}, ("server", "over_selection")),
    ({"fleet": [GROUP], "server": {"target_per_round": 0}}, ("server", "target_per_round")),
    ({"fleet": [{**GROUP, "count": 0}]}, ("fleet", 0, "count")),
    ({"fleet": [GROUP], "dropout": {"hazard_per_hour": -0.1}}, ("dropout", "hazard_per_hour")),
    ({"fleet": [GROUP], "compute_noise_sigma": -1}, ("compute_noise_sigma",)),
    ({"fleet": [{**GROUP, "availability": {"kind": "markov", "mean_on_s": 0, "mean_off_s": 5}}]},
     ("fleet", 0, "availability", "markov", "mean_on_s")),
    ({"fleet": [GROUP], "server": {"deadline_s": float("nan")}}, ("server", "deadline_s")),
    ({"fleet": []}, ("fleet",)),
])
def test_invalid_values_are_rejected_at_their_key(bad, loc):
    assert loc in problems(bad)


def test_unknown_keys_are_rejected():
    assert ("server", "deadlin_s") in problems({"fleet": [GROUP], "server": {"deadlin_s": 5}})


def test_markov_spec_parses():
    w = WorldSpec.model_validate({"fleet": [{**GROUP, "availability": {"kind": "markov", "mean_on_s": 60, "mean_off_s": 30}}]})
    assert w.fleet[0].availability == MarkovSpec(kind="markov", mean_on_s=60, mean_off_s=30)


def test_builtin_profiles_are_complete_and_sourced():
    tiers, links = load_tiers(), load_links()
    assert set(tiers) == {"phone_low", "phone_mid", "phone_flagship", "laptop", "jetson_orin"}
    assert set(links) == {"lte", "5g", "wifi_home", "wifi_phone"}
    for t in tiers.values():
        assert t.source and t.flops_per_s > 0 and t.memory_bytes and t.joules_per_flop > 0 and t.sigma >= 0
    for link in links.values():
        assert link.source and link.down_mbps > 0 and link.up_mbps > 0 and link.latency_s >= 0
    # the tiers are ordered by speed as the plan says; uplink is the bottleneck on mobile
    order = ["phone_low", "phone_mid", "phone_flagship", "laptop"]
    assert [tiers[n].flops_per_s for n in order] == sorted(tiers[n].flops_per_s for n in order)
    assert links["lte"].up_mbps < links["lte"].down_mbps and links["5g"].up_mbps < links["5g"].down_mbps
