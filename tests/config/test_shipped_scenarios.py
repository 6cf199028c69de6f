"""Every shipped scenario validates (as `simfed validate` does), and the paper's studies keep their shape.

Hub datasets are only fetched at run time, so this checks structure, model cards and source syntax.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from simfed.cli import main
from simfed.config import load_scenario
from simfed.data.spec import parse_source

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml")) + sorted((ROOT / "scenarios" / "paper").glob("*.yaml"))
PAPER = sorted((ROOT / "scenarios" / "paper").glob("*.yaml"))


def test_there_are_paper_studies():
    names = {p.stem for p in PAPER}
    for study in ("table1_multilingual", "table1_domains", "table1_ood", "table2_multilingual",
                  "table4_ood", "dataqty_overprovisioned_multilingual", "dataqty_rich_specialists_multilingual"):
        assert study in names and f"{study}_gpt2_hub" in names


SHARED_TRACES = ROOT.parent / "shared" / "traces"  # the project's test traces (never committed here)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_validates(path, capsys, monkeypatch):
    if "$SIMFED_TRACES" in path.read_text():  # a scenario that replays a trace the user brings
        if not SHARED_TRACES.is_dir():
            pytest.skip("needs ../shared/traces (SIMFED_TRACES)")
        monkeypatch.setenv("SIMFED_TRACES", str(SHARED_TRACES))
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith("ok: ")


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.name)
def test_paper_study_runs_in_an_ideal_world_with_three_seeds(path):
    s = load_scenario(path)
    assert s.name == path.stem and s.seeds == [0, 1, 2]
    world = s.world
    assert world.dropout.hazard_per_hour == 0 and world.compute_noise_sigma == 0
    assert world.device_spread_sigma == 0 and world.link_spread_sigma == 0
    server = world.server
    assert server.policy == "sync" and server.target_per_round == world.n_devices and server.over_selection == 1
    assert server.deadline_s >= 1e6
    assert all(g.latency_s == 0 and g.down_mbps >= 1000 and g.up_mbps >= 1000 for g in world.fleet)
    sources = [u.source for u in s.data.users] + [src for u in s.data.users
                                                   for mix in (u.val_source, u.test_source) if mix for src in mix]
    kinds = {parse_source(src).kind for src in sources}
    if path.stem.endswith("_gpt2_hub"):
        assert s.model == "gpt2" and kinds == {"hf"}
        assert (path.parent / (path.stem.removesuffix("_gpt2_hub") + ".yaml")).exists()
    else:
        assert s.model == "smollm2-135m" and kinds == {"builtin"}
        assert (path.parent / f"{path.stem}_gpt2_hub.yaml").exists()
        assert "one seed ≈" in path.read_text()  # the header says how long a seed takes


def test_twins_differ_only_in_model_data_and_labels():
    for offline in (p for p in PAPER if not p.stem.endswith("_gpt2_hub")):
        a, b = load_scenario(offline), load_scenario(offline.with_name(offline.stem + "_gpt2_hub.yaml"))
        assert a.methods == b.methods and a.training == b.training and a.world == b.world
        assert [u.size("train") for u in a.data.users] == [u.size("train") for u in b.data.users]
        assert [bool(u.test_source) for u in a.data.users] == [bool(u.test_source) for u in b.data.users]


def test_a_scenario_naming_an_unset_trace_folder_says_which_variable(monkeypatch, capsys):
    monkeypatch.delenv("SIMFED_TRACES", raising=False)
    assert main(["validate", str(ROOT / "scenarios" / "phones_diurnal_day_trace.yaml")]) == 2
    err = capsys.readouterr().err
    assert "SIMFED_TRACES is not set" in err and "phones_diurnal_day_trace.yaml:" in err
