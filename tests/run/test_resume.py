"""`simfed run --resume RUN_DIR`: a run killed (SIGKILL) after round k and resumed ends with the
same metrics.csv, events.jsonl, trace.json and summary numbers as a run never interrupted —
byte for byte — in a lossy world where stragglers are still computing across the checkpoint."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simfed.cli import main
from simfed.config import load_scenario
from simfed.report.readers import read_metrics, read_summary
from tests.run.conftest import tiny_gpt2_head

# fedavg, hetlora (ranks, received payloads) and pcl (relayed models); devices of the slow group
# miss the 5 s deadline, so updates are still being computed when a round (and its checkpoint) ends
SCENARIO = tiny_gpt2_head("resume_test") + """\
{methods}
world:
  fleet:
    - {{count: 3, tier: phone_mid, link: wifi_home, flops_per_s: 4.0e7}}
    - {{count: 2, tier: phone_low, link: lte, flops_per_s: 1.0e7}}
  dropout: {{hazard_per_hour: 200.0, recovery: none}}
  server: {{rounds: {rounds}, target_per_round: 3, over_selection: 1.3, deadline_s: 5.0, late_reports: upload, min_reports: 0}}
  # the world this test was built for (the old model: stragglers in flight across a checkpoint);
  # tests/run/test_world_resume.py resumes under the new defaults
  energy_model: per_unit
  link_spread_correlation: 1.0
  waste: legacy
"""
METHODS = """\
  - {name: fedavg, kind: fedavg}
  - {name: hetlora, kind: hetlora, min_rank: 4}
  - {name: pcl, kind: pcl, pcl_start: 2, pcl_every: 2}"""
# every other kind, for the in-process test of their state_dict/load_state_dict
OTHER_METHODS = """\
  - {name: comigs, kind: comigs, variant: 1gxs, max_experts: 3, tau: 2, router_steps: 1}
  - {name: flexlora, kind: flexlora, min_rank: 4}
  - {name: ffa_lora, kind: ffa_lora}
  - {name: local, kind: local}
  - {name: centralized, kind: centralized}
  - {name: pfedmoe, kind: pfedmoe}
  - {name: pretrained, kind: pretrained}"""

# Runs the CLI; with KILL=method:round it SIGKILLs itself when that method's first device of that
# round finishes computing (after the previous round's checkpoint, before this round's), and it
# writes to COUNT, one line each as it goes, the real local updates (method, round, device) it ran.
WRAPPER = """
import json, os, signal, sys
from simfed.run import runner
kill = os.environ.get("KILL")
method, round_ = (kill.split(":")[0], int(kill.split(":")[1])) if kill else (None, None)
log = open(os.environ["COUNT"], "w")
real = runner.MethodWorkload.on_compute_done
def on_compute_done(self, device, round_index):  # the live workload: a resume's replay never calls it
    if (self.method.name, round_index) == (method, round_):
        os.kill(os.getpid(), signal.SIGKILL)
    log.write(json.dumps([self.method.name, round_index, device]) + "\\n")
    log.flush()
    return real(self, device, round_index)
runner.MethodWorkload.on_compute_done = on_compute_done
from simfed.cli import main
sys.exit(main(sys.argv[1:]))
"""
OUTPUTS = ("metrics.csv", "events.jsonl", "trace.json")


def cli(args: list[str], tmp: Path, kill: str | None = None) -> tuple[int, list]:
    env = {**os.environ, "COUNT": str(tmp / "count.json")}
    env.pop("KILL", None)
    if kill:
        env["KILL"] = kill
    (tmp / "count.json").unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *args, "--quiet"], env=env, capture_output=True, text=True)
    calls = [json.loads(line) for line in (tmp / "count.json").read_text().splitlines()]
    return proc.returncode, calls


def only_dir(root: Path) -> Path:
    (run,) = [p for p in (root / "resume_test").iterdir() if p.is_dir()]
    return run


def checkpoint_workload(run: Path) -> dict:
    from safetensors import safe_open

    progress = json.loads((run / "checkpoint" / "progress.json").read_text())
    with safe_open(str(run / "checkpoint" / progress["current"]["dir"] / "state.safetensors"), framework="pt") as f:
        return json.loads(f.metadata()["meta"])["workload"]


def checkpointed_calls(progress: dict, run: Path) -> int:
    """Real local updates whose results the checkpoint holds: finished methods' and the current one's."""
    n = sum(entry["training_calls"] for _, _, entry in progress["run"]["results"])
    return n + (checkpoint_workload(run)["training_calls"] if progress["current"] else 0)


def assert_same_run(resumed: Path, reference: Path) -> None:
    for name in OUTPUTS:
        assert (resumed / name).read_bytes() == (reference / name).read_bytes(), name
    a, b = read_summary(resumed), read_summary(reference)
    assert a["status"] == "complete"
    assert a["methods"] == b["methods"]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("resume")
    path = tmp / "resume_test.yaml"
    path.write_text(SCENARIO.format(cache=tmp / "cache", methods=METHODS, rounds=6))
    return path


@pytest.fixture(scope="module")
def reference(scenario: Path) -> tuple[Path, list]:
    """The uninterrupted run, and the real local updates it made."""
    out = scenario.parent / "full"
    rc, calls = cli(["run", str(scenario), "--out", str(out)], scenario.parent)
    assert rc == 0
    run = only_dir(out)
    summary = read_summary(run)["methods"]
    assert summary["fedavg"]["stragglers"] > 0 and summary["hetlora"]["dropouts"] > 0  # a lossy world
    return run, calls


@pytest.mark.parametrize("kill", ["hetlora:3", "fedavg:0", "pcl:5"])
def test_killed_after_round_k_and_resumed_is_byte_identical(scenario, reference, tmp_path, kill) -> None:
    full, full_calls = reference
    rc, before = cli(["run", str(scenario), "--out", str(tmp_path / "runs")], tmp_path, kill=kill)
    assert rc == -signal.SIGKILL
    run = only_dir(tmp_path / "runs")
    progress = json.loads((run / "checkpoint" / "progress.json").read_text())
    current = progress["current"]
    if kill == "hetlora:3":  # checkpoint at the end of round 2, with stragglers still computing
        assert progress["done"] == [[0, 0]] and current["round"] == 2
        assert checkpoint_workload(run)["pending"], "no straggler in flight across the checkpoint"
    if kill == "fedavg:0":
        assert current is None and progress["done"] == []  # nothing to resume from: from scratch
    n = checkpointed_calls(progress, run)

    rc, after = cli(["run", "--resume", str(run)], tmp_path)
    assert rc == 0
    assert_same_run(run, full)
    # no real work is done twice: the resumed process trains exactly what the checkpoint had not
    # (the updates the killed process trained after its last checkpoint are trained again)
    assert before[:n] == full_calls[:n]
    assert after == full_calls[n:]


def test_killed_from_outside_while_running_and_twice(scenario, reference, tmp_path) -> None:
    """SIGKILL from another process once round 2 of the first method is in metrics.csv; the resumed
    run is killed again in a later method, and resumed again."""
    full, _ = reference
    out = tmp_path / "runs"
    env = {**os.environ, "COUNT": str(tmp_path / "count.json")}
    env.pop("KILL", None)
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, "run", str(scenario), "--out", str(out), "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            runs = list((out / "resume_test").glob("*/metrics.csv")) if out.exists() else []
            if runs and any(r["method"] == "fedavg" and r["round"] >= 2 for r in read_metrics(runs[0].parent)):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    run = only_dir(out)
    assert read_summary(run)["status"] == "running"  # killed: nobody wrote the end

    rc, _ = cli(["run", "--resume", str(run)], tmp_path, kill="pcl:3")
    assert rc == -signal.SIGKILL
    assert json.loads((run / "checkpoint" / "progress.json").read_text())["done"] == [[0, 0], [1, 0]]
    rc, _ = cli(["run", "--resume", str(run)], tmp_path)
    assert rc == 0
    assert_same_run(run, full)

    copy = tmp_path / "again"  # resuming a complete run changes nothing
    shutil.copytree(run, copy)
    rc, calls = cli(["run", "--resume", str(copy)], tmp_path)
    assert rc == 0 and calls == []
    assert_same_run(copy, full)


def test_every_method_kind_resumes_in_process(run_text, tmp_path) -> None:
    """The other kinds' state_dict/load_state_dict (CoMiGS experts and routers, FlexLoRA's SVD flag,
    FFA-LoRA's frozen A, private adapters, pooled data, the bare model), interrupted (Ctrl-C) in
    the middle of each one's round 2 and resumed each time."""
    from simfed.run import runner

    text = SCENARIO.format(cache=tmp_path / "cache", methods=OTHER_METHODS, rounds=4)
    (tmp_path / "resume_test.yaml").write_text(text)
    names = [m.name for m in load_scenario(tmp_path / "resume_test.yaml").methods]

    def run(out: Path, resume: Path | None = None) -> Path:
        return run_text(text, tmp_path / "resume_test.yaml", out, resume=resume)

    full = run(tmp_path / "full")
    real = runner.MethodWorkload.on_compute_done
    stop = {"at": None}

    def interrupting(self, device, round_index):
        if (self.method.name, round_index) == stop["at"]:  # the live workload: a replay never calls it
            raise KeyboardInterrupt
        return real(self, device, round_index)

    runner.MethodWorkload.on_compute_done = interrupting
    try:
        stop["at"] = (names[0], 2)
        with pytest.raises(KeyboardInterrupt) as info:
            run(tmp_path / "runs")
        resumed = Path(info.value.run_dir)
        for name in names[1:]:
            stop["at"] = (name, 2)
            with pytest.raises(KeyboardInterrupt):
                run(tmp_path / "runs", resume=resumed)
            assert read_summary(resumed)["status"] == "interrupted"
        stop["at"] = None
        run(tmp_path / "runs", resume=resumed)
    finally:
        runner.MethodWorkload.on_compute_done = real
    assert_same_run(resumed, full)


def test_resume_errors_are_one_line(tmp_path, capsys) -> None:
    assert main(["run", "scenario.yaml", "--resume", str(tmp_path)]) == 2
    assert "takes no scenario" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert main(["run"]) == 2
    assert "give a scenario file" in capsys.readouterr().err
