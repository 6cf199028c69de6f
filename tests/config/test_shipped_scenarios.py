"""Every shipped scenario validates (as `simfed validate` does), and the paper's studies keep their shape.

Hub datasets are only fetched at run time, so this checks structure, model cards and source syntax.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from simfed.cli import main
from simfed.config import load_scenario
from simfed.data.spec import parse_source

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "scenarios").glob("**/*.yaml"))  # every folder: paper/, paper_scale/, cpu_scale/
PAPER = sorted((ROOT / "scenarios" / "paper").glob("*.yaml"))
PAPER_SCALE = sorted((ROOT / "scenarios" / "paper_scale").glob("*.yaml"))
CPU_SCALE = sorted((ROOT / "scenarios" / "cpu_scale").glob("*.yaml"))


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


def test_paper_scale_mirrors_every_paper_study():
    assert sorted(p.name for p in PAPER_SCALE) == sorted(p.name for p in PAPER)


def assert_ideal_world(s) -> None:
    world = s.world
    assert world.dropout.hazard_per_hour == 0 and world.compute_noise_sigma == 0
    assert world.device_spread_sigma == 0 and world.link_spread_sigma == 0
    assert world.server.target_per_round == world.n_devices and world.server.over_selection == 1


@pytest.mark.parametrize("path", PAPER_SCALE, ids=lambda p: p.name)
def test_paper_scale_has_appendix_b_hyper_parameters(path):
    # the paper's Appendix B: 20 rounds (50 for SlimPajama, our domain split), 10 local iterations
    # of 64 × 128 tokens, tau 30, 10 router steps, lr 2e-3 (router too), rank 8, LB 0.01, 3 seeds
    s, twin = load_scenario(path), load_scenario(ROOT / "scenarios" / "paper" / path.name)
    assert s.name == f"{path.stem}_paper_scale" and s.seeds == [0, 1, 2]
    assert s.world.server.rounds == (50 if "_domains" in path.stem else 20)
    t = s.training
    assert (t.local_steps, t.batch_size, t.seq_len, t.lr, t.eval_windows) == (10, 64, 128, 2e-3, "all")
    for m in s.methods:  # each kind's own keys (per-kind specs: a key of another kind does not exist)
        if m.kind == "comigs":
            assert (m.tau, m.router_steps, m.router_lr) == (30, 10, 2e-3)
        if m.kind in ("comigs", "local_moe", "fedavg_moe", "pfedmoe"):
            assert m.lb_lambda == 0.01
        if m.kind != "pretrained":
            assert m.rank == 8
        if path.stem.startswith("table2_") and m.kind == "comigs":
            assert m.lb_form == "generalist"  # the paper's Table 2 numbers use it
    assert [m.name for m in s.methods] == [m.name for m in twin.methods]
    assert s.world.fleet == twin.world.fleet and s.model == twin.model
    assert_ideal_world(s)
    text = path.read_text()
    assert "NOT RUN" in text and "Estimate: ≈" in text and "How: analysis/study_cost.py" in text


@pytest.mark.parametrize("path", CPU_SCALE, ids=lambda p: p.name)
def test_cpu_scale_routers_get_at_least_40_steps(path):
    s = load_scenario(path)
    assert s.seeds == [0, 1, 2] and s.training.eval_windows == "all"
    steps = s.world.server.rounds * s.training.local_steps  # expert steps a device in a run
    for m in s.methods:
        if m.kind == "comigs":  # router phases every tau expert steps (a global counter)
            assert (steps // m.tau) * m.router_steps >= 40, m.name
        elif m.kind in ("local_moe", "fedavg_moe", "pfedmoe"):  # router trained with the experts
            assert steps >= 40, m.name
    assert_ideal_world(s)
    text = path.read_text()  # the header says whether it was run (and where its results are), and its estimate
    assert ("NOT RUN" in text or "Run time: RUN " in text) and "How: analysis/study_cost.py" in text


def test_cpu_scale_covers_the_four_claims():
    spec = importlib.util.spec_from_file_location("analysis_claims", ROOT / "analysis" / "claims.py")
    claims = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(claims)
    checks = [c for p in CPU_SCALE for c in claims.checks_for(load_scenario(p).name)]
    assert sorted(c.__name__ for c in checks) == ["overprovisioned", "rich_specialists", "table1", "table4"]
