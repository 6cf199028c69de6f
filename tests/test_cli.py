"""The `simfed` command: exit codes, one line per error, no tracebacks, no torch for validate."""
from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from simfed.cli import main
from simfed.run.results import RunDirectory

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = ROOT / "tests" / "config" / "minimal.yaml"
BROKEN = ROOT / "tests" / "scenarios_broken"


def test_validate_ok(capsys):
    assert main(["validate", str(MINIMAL)]) == 0
    assert capsys.readouterr().out == "ok: minimal: 2 methods, 5 devices, 3 rounds\n"


def test_validate_with_overrides(capsys):
    assert main(["validate", str(MINIMAL), "--set", "world.fleet.0.count=10",
                 "--set", "world.server.rounds=7"]) == 0
    assert capsys.readouterr().out == "ok: minimal: 2 methods, 12 devices, 7 rounds\n"


def test_validate_errors_one_line_each(capsys):
    path = BROKEN / "several_problems.yaml"
    assert main(["validate", str(path), "--set", "training.lr=0"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert [line.split(":")[1] for line in lines[:4]] == ["16", "20", "22", "26"]
    assert lines[4] == "--set training.lr=0: Input should be greater than 0"
    assert all(line.startswith(str(path)) for line in lines[:4])


def test_validate_unknown_model_card_points_at_the_line(capsys):
    pytest.importorskip("simfed.learn.model_card")
    text = MINIMAL.read_text().replace("model: tiny-gpt2", "model: no-such-model")
    assert main(["validate", str(MINIMAL), "--set", "model=no-such-model"]) == 2
    assert capsys.readouterr().err.startswith("--set model=no-such-model: model: unknown model card")
    assert "no-such-model" in text


def test_missing_file(capsys):
    assert main(["validate", "nope/missing.yaml"]) == 2
    assert capsys.readouterr().err == "nope/missing.yaml: cannot read: No such file or directory\n"


def test_validate_subprocess_no_traceback_no_torch():
    code = ("import sys; from simfed.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'validate imported torch'; sys.exit(rc)")
    for name, lines in (("unknown_key.yaml", 1), ("several_problems.yaml", 4)):
        proc = subprocess.run([sys.executable, "-c", code, "validate", str(BROKEN / name)],
                              capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.splitlines()) == lines
    proc = subprocess.run([sys.executable, "-m", "simfed", "validate", str(MINIMAL)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.startswith("ok: minimal")


def test_devices_lists_tiers_and_links(capsys):
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    for name in ("phone_low", "phone_flagship", "lte", "wifi_home", "source"):
        assert name in out


def test_models(capsys):
    pytest.importorskip("simfed.learn.model_card")
    assert main(["models"]) == 0
    assert "tiny-gpt2" in capsys.readouterr().out


# ---------------------------------------------------------------- run, with a stand-in runner

def fake_runner(monkeypatch, interrupt=False):
    """A runner that writes a run directory the way the real one must, and feeds its observers
    (the view) the way simfed/run/observers.py says: engine events, `Evaluated`, `MethodDone`."""
    from simfed.run.observers import Evaluated, MethodDone
    from simfed.sim.events import SimEvent

    calls = {}

    def run_scenario(scenario, out_root, seeds, observers):
        calls.update(scenario=scenario, out_root=out_root, seeds=seeds)
        with RunDirectory.create(out_root, scenario.name, scenario.resolved_yaml(), seeds) as run:
            for method in scenario.methods:
                for seed in seeds:
                    hears = [o.observer(method.name, seed) for o in observers]
                    for r in range(2):
                        for e in (SimEvent(10.0 * r, "round_start", r), SimEvent(10.0 * r + 5, "round_end", r)):
                            run.log_event(method.name, seed, e.to_dict())
                            for hear in hears:
                                hear(e)
                        run.log_evaluation(method.name, seed, r + 1, 10.0 * r + 5, 100, 200, 1.0,
                                           {0: (50.0 - r, 0.2), 1: (60.0 - r, 0.3)})
                        for hear in hears:
                            hear(Evaluated(10.0 * r + 5, r + 1, 55.0 - r, 0.25, 100, 200, 1.0))
                        if interrupt:
                            raise KeyboardInterrupt
                    run.finish_method(method.name, seed, {"rounds": 2, "dropouts": 1})
                    for hear in hears:
                        hear(MethodDone(15.0))
        return run.path

    monkeypatch.setitem(sys.modules, "simfed.run.runner",
                        types.SimpleNamespace(run_scenario=run_scenario))
    return calls


def test_run_prints_the_run_directory_last(tmp_path, monkeypatch, capsys):
    calls = fake_runner(monkeypatch)
    assert main(["run", str(MINIMAL), "--out", str(tmp_path), "--seed", "3", "--quiet",
                 "--set", "world.server.rounds=2"]) == 0
    out = capsys.readouterr().out.splitlines()
    run_dir = Path(out[-1])
    assert run_dir.parent == tmp_path / "minimal" and (run_dir / "summary.json").exists()
    assert calls["seeds"] == [3] and calls["scenario"].world.server.rounds == 2
    assert "seeds:\n- 3\n" in (run_dir / "scenario.resolved.yaml").read_text()
    assert any(line.startswith("comigs  round 2/2") for line in out)
    assert any("comparison" in line for line in out)

    assert main(["report", str(run_dir)]) == 0
    report = capsys.readouterr().out
    assert "54.00" in report and "status: complete" in report


def test_run_interrupted_exits_130_and_names_the_directory(tmp_path, monkeypatch, capsys):
    fake_runner(monkeypatch, interrupt=True)
    assert main(["run", str(MINIMAL), "--out", str(tmp_path), "--quiet"]) == 130
    captured = capsys.readouterr()
    run_dir = Path(captured.out.splitlines()[-1])
    assert "interrupted; results so far in" in captured.err
    assert '"status": "interrupted"' in (run_dir / "summary.json").read_text()


def test_run_bad_scenario_never_reaches_the_runner(tmp_path, monkeypatch, capsys):
    calls = fake_runner(monkeypatch)
    assert main(["run", str(BROKEN / "deadline_zero.yaml"), "--out", str(tmp_path)]) == 2
    assert calls == {} and "deadline_s: Input should be greater than 0" in capsys.readouterr().err


def test_report_on_a_non_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
