"""Executors: `local` and `ray` (1 or 2 workers) give byte-identical metrics on a lossy world.

Every method with state outside the client's (HetLoRA's ranks and received payloads, PCL's round
and mixing, FFA-LoRA's "holds A") runs here, in a world with dropouts and stragglers, so that the
held-back updates, the discarded ones and the replica hooks are all exercised. The tests start a
local Ray instance (2 CPUs) once for the module.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import ray

from simfed.report.readers import read_metrics
from tests.run.conftest import tiny_gpt2_head

SCENARIO = tiny_gpt2_head("executor_test", threads=1) + """\
  - {{name: comigs, kind: comigs, variant: 1gxs, tau: 2, router_steps: 1}}
  - {{name: hetlora, kind: hetlora, min_rank: 2, prune_gamma: 0.9}}
  - {{name: pcl, kind: pcl, pcl_start: 1, pcl_every: 1}}
  - {{name: ffa, kind: ffa_lora}}
  - {{name: flexlora, kind: flexlora}}
world:
  fleet:
    - {{count: 3, tier: phone_mid, link: wifi_home, flops_per_s: 4.0e7}}
    - {{count: 2, tier: phone_low, link: lte, flops_per_s: 1.0e7}}
  dropout: {{hazard_per_hour: 100}}
  server: {{rounds: 3, target_per_round: 4, over_selection: 1.3, deadline_s: 5}}
executor: {executor}
"""


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def run_with(run_text, tmp_path: Path, name: str, executor: str) -> Path:
    text = SCENARIO.format(cache=tmp_path / "cache", executor=executor)
    return run_text(text, tmp_path / f"{name}.yaml", tmp_path / "runs" / name)


@pytest.fixture(scope="module")
def local_run(run_text, tmp_path_factory) -> Path:
    return run_with(run_text, tmp_path_factory.mktemp("local"), "local", "{kind: local}")


@pytest.fixture(scope="module")
def ray2_run(run_text, local_ray, tmp_path_factory) -> Path:
    return run_with(run_text, tmp_path_factory.mktemp("ray2"), "ray2", "{kind: ray, workers: 2}")


def test_ray_with_two_workers_gives_the_local_metrics_bit_for_bit(local_run, ray2_run) -> None:
    on_ray = ray2_run
    assert (on_ray / "metrics.csv").read_bytes() == (local_run / "metrics.csv").read_bytes()
    rows = read_metrics(on_ray)
    assert {r["method"] for r in rows} == {"comigs", "hetlora", "pcl", "ffa", "flexlora"}
    events = [json.loads(x) for x in (on_ray / "events.jsonl").read_text().splitlines()]
    assert {"dropped", "straggler"} <= {e["kind"] for e in events}, "the lossy paths must be exercised"
    # the ppl moved: real training happened on the workers
    final = [r for r in rows if r["method"] == "comigs" and r["round"] == 3][0]
    start = [r for r in rows if r["method"] == "comigs" and r["round"] == 0][0]
    assert final["ppl"] < start["ppl"]


def test_ray_with_one_worker_gives_the_same_metrics(run_text, local_run, local_ray, tmp_path) -> None:
    on_ray = run_with(run_text, tmp_path, "ray1", "{kind: ray, workers: 1}")
    assert (on_ray / "metrics.csv").read_bytes() == (local_run / "metrics.csv").read_bytes()


def test_training_calls_and_tallies_are_the_same_on_both_executors(local_run, ray2_run) -> None:
    on_ray = ray2_run
    a = json.loads((local_run / "summary.json").read_text())["methods"]
    b = json.loads((on_ray / "summary.json").read_text())["methods"]
    assert a == b
    assert all(stats["training_calls"] > 0 for stats in a.values())


def test_a_method_without_replica_support_is_refused_with_its_name() -> None:
    from simfed.run.executor import ExecutorError, RayExecutor

    class NotRemote:  # a method class that does not derive from Replicable
        name = "odd"

    executor = RayExecutor.__new__(RayExecutor)  # no actors: bind refuses before using any
    with pytest.raises(ExecutorError, match="'odd' cannot run on the 'ray' executor"):
        executor.bind(NotRemote(), 0, [], 0)


def test_a_wrong_executor_kind_names_the_key_and_the_line(tmp_path, capsys) -> None:
    from simfed.cli import main

    text = SCENARIO.format(cache=tmp_path / "cache", executor="{kind: dask}")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    line = text.splitlines().index("executor: {kind: dask}") + 1
    assert f"bad.yaml:{line}" in err and "executor.kind" in err


def test_batched_devices_on_ray_give_the_local_batched_metrics_bit_for_bit(run_text, local_run, local_ray,
                                                                           tmp_path) -> None:
    """`batch_devices: 3` in process and in a Ray worker (one worker: the same batches) agree bit
    for bit; against one by one they agree to float rounding (tests/learn/test_batched.py)."""
    batched = run_with(run_text, tmp_path, "local_b3", "{kind: local, batch_devices: 3}")
    on_ray = run_with(run_text, tmp_path, "ray1_b3", "{kind: ray, workers: 1, batch_devices: 3}")
    assert (on_ray / "metrics.csv").read_bytes() == (batched / "metrics.csv").read_bytes()
    one_by_one, together = read_metrics(local_run), read_metrics(batched)
    assert len(one_by_one) == len(together)
    for a, b in zip(one_by_one, together):
        assert (a["method"], a["round"], a["device"], a["bytes_up"]) == (b["method"], b["round"], b["device"], b["bytes_up"])
        assert b["ppl"] == pytest.approx(a["ppl"], rel=1e-3)
