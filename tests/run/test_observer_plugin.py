"""An observer from outside simfed (`output.observers`) sees every event of the run, and a wrong name is one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from simfed.config import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "my_method"
SMOKE = ROOT / "scenarios" / "tiny_smoke.yaml"


def test_round_log_gets_every_round_end_of_a_dry_run(tmp_path, monkeypatch):
    """tiny_smoke: 3 methods × 4 rounds = 12 round ends, the same ones events.jsonl holds."""
    from simfed.run import runner
    from simfed.run.progress import ProgressView

    monkeypatch.syspath_prepend(str(EXAMPLE))
    scenario = load_scenario(SMOKE, ["training.dry=true", 'output.observers=["my_method.observers:RoundLog"]'])
    with ProgressView([m.name for m in scenario.methods], 4, enabled=False) as view:
        run = Path(runner.run_scenario(scenario, tmp_path, scenario.seeds, [view]))
    logged = [line.split("\t") for line in (run / "rounds.tsv").read_text().splitlines()]
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    ends = [(e["method"], str(e["seed"]), str(e["round"])) for e in events if e["kind"] == "round_end"]
    assert len(logged) == 12
    assert [tuple(row[:3]) for row in logged] == ends


def test_an_observer_that_is_not_there_is_one_line():
    with pytest.raises(ScenarioError) as info:
        load_scenario(SMOKE, ['output.observers=["no_such_pkg:Log"]'])
    (problem,) = info.value.problems
    assert problem.startswith('--set output.observers=["no_such_pkg:Log"]: output.observers.0: cannot import \'no_such_pkg\'')
