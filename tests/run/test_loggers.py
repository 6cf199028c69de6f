"""output.loggers: [tensorboard] — the event files hold metrics.csv's mean rows, read back with
TensorBoard's own event reader."""
from __future__ import annotations

from pathlib import Path

import pytest

from simfed.report.readers import metrics_frame

pytest.importorskip("tensorboard")

SCENARIO = """
name: tb
model: tiny-gpt2
data: {{users: [toy:a, toy:b], train_tokens: 2000, val_tokens: 500, test_tokens: 500, cache_dir: {cache}}}
training: {{local_steps: 2, batch_size: 2, seq_len: 32, eval_windows: 2}}
methods:
  - {{name: fedavg, kind: fedavg, rank: 2}}
  - {{name: comigs, kind: comigs, rank: 2, tau: 2, router_steps: 1}}
world:
  fleet: [{{count: 3, tier: phone_mid, link: lte}}]
  server: {{rounds: 3, target_per_round: 2, over_selection: 1.3, deadline_s: 600}}
output: {{loggers: [tensorboard]}}
"""


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_scalars_match_metrics_csv(run_text, tmp_path: Path) -> None:
    run = run_text(SCENARIO.format(cache=tmp_path / "cache"), tmp_path / "tb.yaml", tmp_path / "runs")
    metrics = metrics_frame(run)
    for method in ("fedavg", "comigs"):
        got = scalars(run / "tensorboard" / method / "seed0")
        assert set(got) == {f"{n}/{axis}" for n in ("ppl", "acc", "bytes_up", "bytes_down")
                            for axis in ("by_round", "by_sim_s")}
        rows = metrics[(metrics["method"] == method) & (metrics["device"] == "mean")].sort_values("round")
        assert [s for s, _ in got["ppl/by_round"]] == [0, 1, 2, 3] == list(rows["round"])
        for (step, value), ppl in zip(got["ppl/by_round"], rows["ppl"]):
            assert value == pytest.approx(ppl, rel=1e-6)  # TensorBoard stores float32
        assert [s for s, _ in got["ppl/by_sim_s"]] == [int(t + 0.5) for t in rows["sim_time_s"]]
        assert [v for _, v in got["bytes_up/by_round"]] == [float(b) for b in rows["bytes_up"]]
        assert [v for _, v in got["bytes_down/by_round"]] == [float(b) for b in rows["bytes_down"]]
        assert [v for _, v in got["acc/by_round"]] == pytest.approx(list(rows["acc"]), rel=1e-6)
