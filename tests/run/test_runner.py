"""The runner end to end on a tiny model: determinism, bytes, events ↔ summary, no wasted training."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from simfed.report.readers import read_metrics
from tests.run.conftest import tiny_gpt2_head

SCENARIO = tiny_gpt2_head("runner_test", payload_dtype="{dtype}") + """\
  - {{name: comigs, kind: comigs, variant: 1g1s, tau: 2, router_steps: 1}}
  - {{name: hetlora, kind: hetlora, min_rank: 4}}
world:
  fleet:
    - {{count: 3, tier: phone_mid, link: wifi_home, flops_per_s: 4.0e7}}
    - {{count: 2, tier: phone_low, link: lte, flops_per_s: 1.0e7}}
  dropout: {{hazard_per_hour: {hazard}}}
  server: {{rounds: 3, target_per_round: 3, over_selection: 1.3, deadline_s: {deadline}}}
"""


def run_once(run_text, tmp_path: Path, name: str, dtype: str = "float32", hazard: float = 0.0,
             deadline: float = 600.0) -> Path:
    text = SCENARIO.format(cache=tmp_path / "cache", dtype=dtype, hazard=hazard, deadline=deadline)
    return run_text(text, tmp_path / f"{name}.yaml", tmp_path / "runs" / name)


@pytest.fixture(scope="module")
def lossy_run(run_text, tmp_path_factory) -> Path:
    """A run with dropouts and stragglers, shared by the consistency tests."""
    return run_once(run_text, tmp_path_factory.mktemp("lossy"), "lossy", hazard=200.0, deadline=5.0)


def test_same_scenario_and_seed_give_byte_identical_metrics(run_text, tmp_path: Path) -> None:
    first = run_once(run_text, tmp_path, "a")
    second = run_once(run_text, tmp_path, "b")
    assert (first / "metrics.csv").read_bytes() == (second / "metrics.csv").read_bytes()
    rows = read_metrics(first)
    assert {r["method"] for r in rows} == {"comigs", "hetlora"}
    assert {r["round"] for r in rows} == {0, 1, 2, 3}


def test_comigs_upload_bytes_match_the_tensor_shapes_in_the_travel_dtype(run_text, tmp_path: Path) -> None:
    run = run_once(run_text, tmp_path, "fp16", dtype="float16")
    # tiny-gpt2: 2 layers, d=64, rank 8. Attention LoRA: c_attn A 8×64 + B 192×8, c_proj A 8×64 + B 64×8
    attention = 8 * 64 + 192 * 8 + 8 * 64 + 64 * 8  # 3072 per layer
    # generalist expert: c_fc A 8×64 + B 256×8, c_proj A 8×256 + B 64×8
    generalist = 8 * 64 + 256 * 8 + 8 * 256 + 64 * 8  # 5120 per layer
    expected = 2 * (attention + generalist) * 2  # 2 layers, 2 bytes per float16
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    uploads = {e["bytes"] for e in events if e["kind"] == "upload_end" and e["method"] == "comigs"}
    assert uploads == {expected} == {32768}


def test_summary_agrees_with_an_independent_recount_of_the_events(lossy_run: Path) -> None:
    events = [json.loads(line) for line in (lossy_run / "events.jsonl").read_text().splitlines()]
    summary = json.loads((lossy_run / "summary.json").read_text())
    assert summary["status"] == "complete"
    for method in ("comigs", "hetlora"):
        ev = [e for e in events if e["method"] == method]
        stats = summary["methods"][method]
        stats = stats.get("0", stats) if isinstance(stats, dict) and "0" in stats else stats
        up = sum(e["bytes"] for e in ev if e["kind"] == "upload_end")
        up += sum(e.get("bytes", 0) for e in ev if e["kind"] == "dropped" and e["phase"] == "upload")
        down = sum(e["bytes"] for e in ev if e["kind"] == "download_end")
        down += sum(e.get("bytes", 0) for e in ev if e["kind"] == "dropped" and e["phase"] == "download")
        assert stats["bytes_up"] == up
        assert stats["bytes_down"] == down
        assert stats["dropouts"] == sum(1 for e in ev if e["kind"] == "dropped")
        assert stats["stragglers"] == sum(1 for e in ev if e["kind"] == "straggler")
        assert stats["updates_aggregated"] == sum(len(e["devices"]) for e in ev if e["kind"] == "aggregated")
        assert stats["rounds"] == sum(1 for e in ev if e["kind"] == "round_end")
        wasted = sum(e.get("wasted_bytes", 0) for e in ev if e["kind"] in ("dropped", "straggler"))
        assert stats["wasted_bytes"] == wasted
        assert math.isclose(
            stats["wasted_compute_s"],
            sum(e.get("wasted_compute_s", 0.0) for e in ev if e["kind"] in ("dropped", "straggler")),
            rel_tol=1e-9, abs_tol=1e-9,
        )
        assert math.isclose(stats["sim_time_s"], max(e["t"] for e in ev), rel_tol=1e-9)
        # the last mean row of metrics.csv is the summary's final perplexity
        means = [r for r in read_metrics(lossy_run) if r["method"] == method and r["device"] == "mean"]
        assert math.isclose(stats["final_mean_ppl"], means[-1]["ppl"], rel_tol=1e-9)


def test_the_lossy_world_really_loses_updates(lossy_run: Path) -> None:
    events = [json.loads(line) for line in (lossy_run / "events.jsonl").read_text().splitlines()]
    kinds = {e["kind"] for e in events}
    assert "straggler" in kinds, "the slow tier (1e7 FLOP/s) cannot meet a 5 s deadline"
    assert "dropped" in kinds, "a hazard of 200/h over rounds of seconds must drop someone"


def test_only_devices_that_finish_compute_train(lossy_run: Path) -> None:
    """A device that drops before its compute ends never runs the training code."""
    events = [json.loads(line) for line in (lossy_run / "events.jsonl").read_text().splitlines()]
    summary = json.loads((lossy_run / "summary.json").read_text())
    for method in ("comigs", "hetlora"):
        stats = summary["methods"][method]
        compute_ends = sum(1 for e in events if e["method"] == method and e["kind"] == "compute_end")
        assert stats["training_calls"] + stats["training_skipped"] == compute_ends


def test_spilling_states_to_disk_changes_no_number(run_text, tmp_path: Path, monkeypatch) -> None:
    """state_memory_mb: 0 keeps no device state in RAM between uses (all spilled to safetensors):
    the metrics equal those of the all-in-memory run byte for byte."""
    base = SCENARIO.format(cache=tmp_path / "cache", dtype="float32", hazard=0.0, deadline=600.0)
    spilled = base.replace("training:\n", "training:\n  state_memory_mb: 0\n")
    assert spilled != base
    import simfed.learn.store as store

    a = run_text(base, tmp_path / "memory.yaml", tmp_path / "runs" / "memory")
    saves = []
    real_save = store.save_client_state
    monkeypatch.setattr(store, "save_client_state", lambda state, path: (saves.append(path), real_save(state, path)))
    b = run_text(spilled, tmp_path / "spilled.yaml", tmp_path / "runs" / "spilled")
    assert len(saves) >= 2 * 3 * 3  # two methods × three rounds × three devices trained
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()
    assert not (b / "spill").exists()  # removed when each method finished
