"""The Python API: simfed.run from a dict equals `simfed run FILE`; load_run's frames hold the files."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

import simfed
from simfed.cli import main
from simfed.errors import SimfedError

SCENARIO = """
name: api_test
model: tiny-gpt2
data: {{users: [toy:a, toy:b], train_tokens: 3000, val_tokens: 800, test_tokens: 800, cache_dir: {cache}}}
training: {{local_steps: 2, batch_size: 2, seq_len: 32, eval_windows: 4}}
methods:
  - {{name: fedavg, kind: fedavg, rank: 4}}
  - {{name: comigs, kind: comigs, rank: 4, tau: 2, router_steps: 1}}
world:
  fleet: [{{count: 3, tier: phone_mid, link: lte}}]
  dropout: {{hazard_per_hour: 30.0}}
  server: {{rounds: 2, target_per_round: 2, over_selection: 1.3, deadline_s: 600}}
"""


def test_run_from_a_dict_gives_the_same_metrics_as_simfed_run_file(tmp_path: Path, capsys) -> None:
    text = SCENARIO.format(cache=tmp_path / "cache")
    path = tmp_path / "api_test.yaml"
    path.write_text(text)
    assert main(["run", str(path), "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    cli_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    result = simfed.run(yaml.safe_load(text), out=tmp_path / "api")
    assert result.path.parent.parent == tmp_path / "api"
    assert (result.path / "metrics.csv").read_bytes() == (cli_dir / "metrics.csv").read_bytes()
    assert (result.path / "events.jsonl").read_bytes() == (cli_dir / "events.jsonl").read_bytes()

    loaded = simfed.load_run(cli_dir)
    metrics = loaded.metrics
    assert isinstance(metrics, pd.DataFrame)
    # 2 methods × rounds 0..2 × (3 devices + mean)
    assert len(metrics) == 2 * 3 * 4 and set(metrics["device"]) == {"0", "1", "2", "mean"}
    assert metrics["bytes_up"].dtype == "int64" and metrics["ppl"].dtype == "float64"
    lines = (cli_dir / "events.jsonl").read_text().splitlines()
    events = loaded.events
    assert len(events) == len(lines) and list(events["kind"]) == [json.loads(x)["kind"] for x in lines]
    final = loaded.final()
    assert list(final["method"]) == ["fedavg", "comigs"] and set(final["round"]) == {2}
    summary = json.loads((cli_dir / "summary.json").read_text())
    for _, row in final.iterrows():
        assert row["ppl"] == summary["methods"][row["method"]]["final_mean_ppl"]
    env = summary["environment"]  # what bit-identity depends on (simfed/run/environment.py)
    assert env["torch_version"] == torch.__version__ and env["torch_threads"] == torch.get_num_threads()
    assert env["device"] == "cpu" and env["gpu_name"] is None and env["precision"] == "float32"
    assert env["simfed_version"] == simfed.__version__
    if platform.libc_ver()[0] == "glibc" and "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        assert env["malloc"].startswith("glibc") and "trimming off" in env["malloc"]  # simfed/run/host_memory.py
    head = subprocess.run(["git", "-C", str(Path(simfed.__file__).parents[1]), "rev-parse", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    assert env["git_commit"] == head and len(head) == 40


def test_run_accepts_a_scenario_object_and_a_path(tmp_path: Path) -> None:
    from simfed.config import load_scenario

    text = SCENARIO.format(cache=tmp_path / "cache").replace("rounds: 2", "rounds: 1")
    path = tmp_path / "api_test.yaml"
    path.write_text(text)
    by_object = simfed.run(load_scenario(path), out=tmp_path / "o")
    by_path = simfed.run(path, out=tmp_path / "p")
    assert (by_object.path / "metrics.csv").read_bytes() == (by_path.path / "metrics.csv").read_bytes()


def test_a_wrong_key_in_a_dict_names_the_key(tmp_path: Path) -> None:
    doc = yaml.safe_load(SCENARIO.format(cache=tmp_path / "cache"))
    doc["training"]["local_stepz"] = 3
    with pytest.raises(SimfedError, match="training.local_stepz"):
        simfed.run(doc, out=tmp_path)
    with pytest.raises(SimfedError, match="not a run directory"):
        simfed.load_run(tmp_path)


class Recorder:
    """An observer written from the protocol alone (not from simfed's base class): it keeps what it hears."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, int, object]] = []
        self.closed = False

    def observer(self, method: str, seed: int):
        return lambda event: self.heard.append((method, seed, event))

    def close(self) -> None:
        self.closed = True


def test_an_observer_hears_the_engine_then_each_evaluation_then_the_end(tmp_path: Path) -> None:
    """What the live view relies on, for any observer: every engine event of events.jsonl, an
    evaluation per metrics.csv mean row right after the round_end it follows (round 0 first), and
    one end; the run does not close an observer its caller passed."""
    from simfed.run.observers import Evaluated, MethodDone
    from simfed.sim.events import SimEvent

    recorder = Recorder()
    result = simfed.run(yaml.safe_load(SCENARIO.format(cache=tmp_path / "cache")), out=tmp_path / "api",
                        observers=[recorder])
    assert not recorder.closed
    events = [json.loads(line) for line in (result.path / "events.jsonl").read_text().splitlines()]
    means = [row for row in result.metrics.to_dict("records") if row["device"] == "mean"]
    for method in ("fedavg", "comigs"):
        heard = [e for m, seed, e in recorder.heard if m == method and seed == 0]
        assert [e.to_dict() for e in heard if isinstance(e, SimEvent)] == \
            [{k: v for k, v in e.items() if k not in ("method", "seed")} for e in events if e["method"] == method]
        evaluated = [e for e in heard if isinstance(e, Evaluated)]
        rows = [r for r in means if r["method"] == method]
        assert [(e.rounds_done, e.t, e.bytes_up, e.bytes_down) for e in evaluated] == \
            [(r["round"], r["sim_time_s"], r["bytes_up"], r["bytes_down"]) for r in rows]
        assert [e.ppl for e in evaluated] == pytest.approx([r["ppl"] for r in rows], rel=1e-12)
        assert [e.energy_j for e in evaluated] == pytest.approx([r["energy_j"] for r in rows], rel=1e-9)
        assert heard[0] == evaluated[0] and evaluated[0].rounds_done == 0  # the pretrained model, first
        for e in evaluated[1:]:  # right after the round_end of the round it follows
            before = heard[heard.index(e) - 1]
            assert before.kind == "round_end" and before.round == e.rounds_done - 1 and before.t == e.t
        assert isinstance(heard[-1], MethodDone) and sum(isinstance(e, MethodDone) for e in heard) == 1
