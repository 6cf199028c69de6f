"""Real scenarios: the broken fixtures give the exact one-line messages; overrides; resolved YAML."""
from __future__ import annotations

from pathlib import Path

import pytest

from simfed.config import Scenario, ScenarioError, load_scenario

HERE = Path(__file__).parent
MINIMAL = HERE / "minimal.yaml"
BROKEN = HERE.parent / "scenarios_broken"

# file → the expected lines, after "<path>:" (line numbers counted by hand in the fixtures)
EXPECTED = {
    "unknown_key.yaml": [
        "34: world.server.deadlin_s: unknown key (did you mean 'deadline_s'?)"],
    "wrong_type.yaml": [
        "11: training.local_steps: Input should be a valid integer, "
        "unable to parse string as an integer (got 'ten')"],
    "negative_bandwidth.yaml": ["25: world.fleet.0.up_mbps: Input should be greater than 0"],
    "deadline_zero.yaml": ["34: world.server.deadline_s: Input should be greater than 0"],
    "duplicate_key.yaml": ["14: training.batch_size: duplicate key (first given at line 12)"],
    "yaml_syntax.yaml": [
        "7: YAML syntax error: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence that starts at line 6)"],
    "unknown_tier.yaml": [
        "26: world.fleet.1.tier: unknown tier 'phone_medium'; choose one of: "
        "jetson_orin, laptop, phone_flagship, phone_low, phone_mid"],
    "duplicate_methods.yaml": [
        "17: methods.1.name: duplicate method name 'comigs' (also methods.0.name)"],
    "several_problems.yaml": [
        "16: methods.0.kind: unknown method kind 'comgis' (expected one of: comigs, hetlora, fedavg, local, "
        "ffa_lora, flexlora, pcl, pretrained, centralized, local_moe, fedavg_moe, pfedmoe, "
        "or package.module:ClassName)",
        "20: world.fleet: required key missing",
        "22: world.dropout.hazard_per_hr: unknown key (did you mean 'hazard_per_hour'?)",
        "26: world.server.deadline_s: Input should be greater than 0",
    ],
}


def test_every_fixture_has_an_expectation():
    assert sorted(p.name for p in BROKEN.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_scenario_messages(name):
    path = BROKEN / name
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.problems == [f"{path}:{line}" for line in EXPECTED[name]]
    assert str(info.value) == "\n".join(info.value.problems)


def test_minimal_loads_with_defaults():
    s = load_scenario(MINIMAL)
    assert s.describe() == "minimal: 2 methods, 5 devices, 3 rounds"
    assert s.training.lr == 2e-3 and s.world.server.over_selection == 1.3


def test_name_defaults_to_file_stem(tmp_path):
    text = MINIMAL.read_text().replace("name: minimal\n", "")
    path = tmp_path / "my_world.yaml"
    path.write_text(text)
    assert load_scenario(path).name == "my_world"


def test_overrides_on_a_real_scenario():
    s = load_scenario(MINIMAL, ["world.server.deadline_s=60", "seeds=[0,1]", "methods.1.rank=4",
                                "world.fleet.1.availability.mean_on_s=90"])
    assert s.world.server.deadline_s == 60
    assert s.seeds == [0, 1]
    assert s.methods[1].rank == 4
    assert s.world.fleet[1].availability.mean_on_s == 90


def test_bad_overrides():
    with pytest.raises(ScenarioError) as info:
        load_scenario(MINIMAL, ["world.server.deadlin_s=60", "methods.2.rank=4", "training.lr=-1"])
    assert info.value.problems == [
        "--set world.server.deadlin_s=60: unknown key (did you mean 'deadline_s'?)",
        "--set methods.2.rank=4: methods is a list of 2 items; '2' is not an index in it",
    ]
    with pytest.raises(ScenarioError) as info:
        load_scenario(MINIMAL, ["training.lr=-1"])
    assert info.value.problems == ["--set training.lr=-1: Input should be greater than 0"]


def test_duplicate_seeds():
    with pytest.raises(ScenarioError) as info:
        load_scenario(MINIMAL, ["seeds=[3, 3]"])
    assert info.value.problems == ["--set seeds=[3, 3]: seeds.1: duplicate seed 3"]


def test_resolved_yaml_round_trips(tmp_path):
    s = load_scenario(MINIMAL)
    text = s.resolved_yaml()
    assert text.startswith("# minimal: resolved by simfed")
    assert "over_selection: 1.3" in text  # a default made explicit
    path = tmp_path / "again.yaml"
    path.write_text(text)
    assert load_scenario(path).model_dump() == s.model_dump()
    assert isinstance(s, Scenario)


def test_async_policies_load_for_methods_that_merge_staleness_weighted_updates():
    for policy in ("fedbuff", "fedasync"):
        extra = ["world.server.buffer_size=3"] if policy == "fedbuff" else []
        s = load_scenario(MINIMAL, [f"world.server.policy={policy}", "world.server.concurrency=3", *extra])
        assert s.world.server.policy == policy and [m.kind for m in s.methods] == ["comigs", "hetlora"]
    s = load_scenario(MINIMAL, ["world.server.policy=fedbuff", "world.server.buffer_size=2", "methods.0.kind=fedavg"])
    assert s.world.server.buffer == 2


def test_async_policy_rejects_methods_that_cannot_and_names_them():
    with pytest.raises(ScenarioError) as info:
        load_scenario(MINIMAL, ["world.server.policy=fedbuff", "world.server.buffer_size=2",
                                "methods.1.kind=flexlora"])
    assert info.value.problems == [
        "--set world.server.policy=fedbuff: 'fedbuff' needs methods that merge "
        "staleness-weighted updates (comigs, fedavg, hetlora); these cannot: hetlora (flexlora)"]
    # dry mode merges nothing: any method runs any policy there
    s = load_scenario(MINIMAL, ["world.server.policy=fedasync", "methods.1.kind=flexlora", "training.dry=true"])
    assert s.methods[1].kind == "flexlora"
    assert s.world.server.policy == "fedasync"


def test_the_systems_scenarios_load():
    root = HERE.parents[1] / "scenarios"
    sync = load_scenario(root / "sync_vs_fedbuff.yaml")
    fedbuff = load_scenario(root / "sync_vs_fedbuff.yaml", ["world.server.policy=fedbuff"])
    assert (sync.world.server.policy, fedbuff.world.server.policy) == ("sync", "fedbuff")
    assert sync.methods == fedbuff.methods and sync.world.fleet == fedbuff.world.fleet
    day = load_scenario(root / "phones_diurnal_day.yaml")
    assert day.training.dry and day.world.n_devices == 400 and day.world.server.max_sim_time_s == 86400
    assert all(g.availability.kind == "diurnal" for g in day.world.fleet)
