"""Dropped devices' payloads are freed (and so leave the checkpoints), and a resume refuses a
replay that disagrees with its checkpoint, naming what changed."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from simfed.run import runner
from simfed.run.checkpoint import ResumeError
from simfed.report.readers import read_summary
from tests.run.conftest import tiny_gpt2_head

SCENARIO = tiny_gpt2_head("world_resume") + """
  - {{name: fedavg, kind: fedavg}}
world:
  fleet:
    - {{count: 4, tier: test_phone, link: wifi_home}}
    - {{count: 2, tier: phone_low, link: lte, flops_per_s: 1.0e7}}
  dropout: {{hazard_per_hour: 300.0, recovery_mean_s: 5.0}}
  server: {{rounds: 5, target_per_round: 3, over_selection: 1.3, deadline_s: 5.0}}
"""
TIER = "test_phone: {{flops_per_s: {flops}, memory_gb: 6, joules_per_flop: 1.0e-10, sigma: 0.5, source: test}}\n"


@pytest.fixture
def interrupted(run_text, tmp_path, monkeypatch):
    """The scenario interrupted (Ctrl-C) when round 3's first device finishes computing; the
    dropped events seen while it ran, with the pending map right after each."""
    tiers = tmp_path / "tiers_a.yaml"
    tiers.write_text(TIER.format(flops="4.0e7"))
    monkeypatch.setenv("SIMFED_PROFILES", str(tiers))
    text = SCENARIO.format(cache=tmp_path / "cache")
    seen: list[tuple[dict, set[int]]] = []
    real_event, real_compute = runner.MethodWorkload.on_event, runner.MethodWorkload.on_compute_done

    def on_event(self, event):
        real_event(self, event)
        if event.kind == "dropped":  # the live workload: a replay never calls it
            seen.append((event.to_dict(), set(self.pending)))

    def on_compute_done(self, device, round_index):
        if round_index == 3:
            raise KeyboardInterrupt
        return real_compute(self, device, round_index)

    monkeypatch.setattr(runner.MethodWorkload, "on_event", on_event)
    monkeypatch.setattr(runner.MethodWorkload, "on_compute_done", on_compute_done)
    with pytest.raises(KeyboardInterrupt) as info:
        run_text(text, tmp_path / "world_resume.yaml", tmp_path / "runs")
    monkeypatch.setattr(runner.MethodWorkload, "on_compute_done", real_compute)
    return Path(info.value.run_dir), text, seen


def checkpoint_state(run: Path) -> tuple[Path, dict]:
    progress = json.loads((run / "checkpoint" / "progress.json").read_text())
    path = run / "checkpoint" / progress["current"]["dir"] / "state.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return path, json.loads(f.metadata()["meta"])


def still_computing(run: Path, round_index: int) -> set[int]:
    """From events.jsonl up to round `round_index`'s end: devices that started a download and
    have neither finished computing nor dropped since (their payload is still needed)."""
    holding: set[int] = set()
    for line in (run / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["kind"] == "download_start":
            holding.add(e["device"])
        elif e["kind"] in ("compute_end", "dropped"):
            holding.discard(e["device"])
        elif e["kind"] == "round_end" and e["round"] == round_index:
            return holding
    raise AssertionError("round end not found")


def test_a_dropped_devices_payload_is_freed_and_not_checkpointed(interrupted):
    run, _, seen = interrupted
    early = [e for e, _ in seen if e["phase"] in ("download", "compute")]
    assert early, "no device dropped before finishing its compute: the test shows nothing"
    for event, pending in seen:
        assert event["device"] not in pending
    _, meta = checkpoint_state(run)
    round_index = json.loads((run / "checkpoint" / "progress.json").read_text())["current"]["round"]
    checkpointed = {int(key) for key, _names in meta["workload"]["pending"]}
    assert checkpointed == still_computing(run, round_index)


def test_resume_refuses_a_changed_tier_in_one_line(interrupted, run_text, tmp_path, monkeypatch):
    run, text, _ = interrupted
    changed = tmp_path / "tiers_b.yaml"
    changed.write_text(TIER.format(flops="4.4e7"))
    monkeypatch.setenv("SIMFED_PROFILES", str(changed))
    with pytest.raises(ResumeError) as info:
        run_text(text, tmp_path / "world_resume.yaml", tmp_path / "runs", resume=run)
    message = str(info.value)
    assert "\n" not in message
    assert message == ("resume: fedavg seed 0: tier 'test_phone' changed since the checkpoint "
                       "($SIMFED_PROFILES or simfed's built-in profiles?)")


def test_resume_refuses_a_replay_whose_time_disagrees_and_goes_on_when_it_agrees(interrupted, run_text, tmp_path):
    run, text, _ = interrupted
    intact = tmp_path / "intact"
    shutil.copytree(run, intact)
    path, meta = checkpoint_state(run)
    recorded = meta["workload"]["tally"]["sim_time_s"]
    meta["workload"]["tally"]["sim_time_s"] = recorded + 1.5  # as if the world had run 1.5 s longer then
    save_file(load_file(str(path)), str(path), metadata={"meta": json.dumps(meta)})
    with pytest.raises(ResumeError) as info:
        run_text(text, tmp_path / "world_resume.yaml", tmp_path / "runs", resume=run)
    round_index = json.loads((run / "checkpoint" / "progress.json").read_text())["current"]["round"]
    assert str(info.value) == (f"resume: fedavg seed 0: the replay ends round {round_index} with sim_time_s "
                               f"{recorded!r} (checkpoint: {recorded + 1.5!r}) (the scenario's world, its data "
                               "files or simfed changed?)")
    run_text(text, tmp_path / "world_resume.yaml", tmp_path / "runs", resume=intact)
    assert read_summary(intact)["status"] == "complete"
    # and, under the new defaults (energy power x time, refused late reports, recovery, kept shares),
    # the resumed run is byte for byte the run never interrupted
    full = run_text(text, tmp_path / "world_resume.yaml", tmp_path / "full")
    for name in ("metrics.csv", "events.jsonl", "trace.json"):
        assert (intact / name).read_bytes() == (full / name).read_bytes(), name
    assert read_summary(intact)["methods"] == read_summary(full)["methods"]
