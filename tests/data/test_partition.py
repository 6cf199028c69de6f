"""Partitioners: Dirichlet label mixes concentrate as expected, natural ids give one device per id.

The labelled data set is a local JSON-lines file in which label k's documents consist of the letter
chr(97 + k) only, so a device's label mix is measured independently of the partition code: by
counting letters in the byte tokens of its training split.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simfed.data.federated import build_federation
from simfed.data.partition import shares
from simfed.data.partition_record import partition_record
from simfed.data.spec import DataError, DataSpec, PartitionSpec
from simfed.data.tokenized import ByteTokenizer
from tests.run.conftest import run_text  # noqa: F401 - the runner tests' fixture

K = 4  # labels


def labelled_file(folder: Path, docs_per_label: int = 500) -> Path:
    path = folder / "labelled.jsonl"
    with path.open("w") as f:
        for i in range(docs_per_label):
            for k in range(K):
                f.write(json.dumps({"text": chr(97 + k) * 50, "label": k, "user_id": f"u{k}"}) + "\n")
    return path


def spec(path: Path, cache: Path, **partition) -> DataSpec:
    return DataSpec(users=[str(path)], train_tokens=400, val_tokens=100, test_tokens=100, cache_dir=cache,
                    partition=partition)


def label_mix(tokens: np.ndarray) -> np.ndarray:
    counts = np.array([(tokens == 97 + k).sum() for k in range(K)], dtype=float)
    return counts / counts.sum()


def expected_sum_of_squares(alpha: float, k: int) -> float:
    """E[sum_k q_k^2] for q ~ Dir(alpha, ..., alpha): k · alpha(alpha+1) / (k·alpha (k·alpha+1))."""
    return (alpha + 1) / (k * alpha + 1)


@pytest.mark.parametrize("alpha,tolerance", [(0.1, 0.1), (100.0, 0.01)])
def test_dirichlet_label_mixes_match_the_expected_concentration(tmp_path: Path, alpha: float, tolerance: float) -> None:
    data = spec(labelled_file(tmp_path), tmp_path / "cache", kind="dirichlet", alpha=alpha, column="label")
    devices = build_federation(data, ByteTokenizer(), 40, seed=0)
    mixes = np.array([label_mix(d.train) for d in devices])  # (devices, labels), measured from the tokens
    measured = float((mixes ** 2).sum(1).mean())
    assert measured == pytest.approx(expected_sum_of_squares(alpha, K), abs=tolerance)
    for d in devices:  # train, val and test are all drawn from the device's own mixture
        assert len(d.train) == 400 and len(d.val) == 100 and len(d.test) == 100


def test_small_alpha_is_far_more_concentrated_than_large(tmp_path: Path) -> None:
    path = labelled_file(tmp_path)
    skewed = build_federation(spec(path, tmp_path / "c", kind="dirichlet", alpha=0.1, column="label"), ByteTokenizer(), 20, 0)
    even = build_federation(spec(path, tmp_path / "c", kind="dirichlet", alpha=100.0, column="label"), ByteTokenizer(), 20, 0)
    top = lambda ds: np.mean([label_mix(d.train).max() for d in ds])  # noqa: E731
    assert top(skewed) > 0.6 and top(even) < 0.35


def test_many_draws_match_the_dirichlet_moments() -> None:
    # 4000 devices: the sample mean of sum q^2 is within a few standard errors (< 0.01) of its expectation
    pool = [f"s{k}" for k in range(5)]
    for alpha in (0.1, 1.0, 100.0):
        q = np.array([[s.weights.get(p, 0.0) for p in pool]
                      for s in shares(pool, PartitionSpec(kind="dirichlet", alpha=alpha), 4000, seed=3)])
        assert np.allclose(q.sum(1), 1.0)
        assert (q ** 2).sum(1).mean() == pytest.approx(expected_sum_of_squares(alpha, 5), abs=0.01)
        assert q.mean(0) == pytest.approx(np.full(5, 0.2), abs=0.02)  # symmetric: every source 1/5 on average


def test_iid_gives_every_device_the_same_mix(tmp_path: Path) -> None:
    devices = build_federation(spec(labelled_file(tmp_path), tmp_path / "c", kind="iid", column="label"),
                               ByteTokenizer(), 6, 0)
    for d in devices:
        assert label_mix(d.train) == pytest.approx(np.full(K, 0.25))  # 400 tokens = 100 per label


def test_natural_id_gives_one_device_per_id(tmp_path: Path) -> None:
    data = spec(labelled_file(tmp_path), tmp_path / "c", kind="natural_id", column="user_id")
    devices = build_federation(data, ByteTokenizer(), K, 0)
    letters = []
    for d in devices:
        present = {chr(t) for t in np.unique(np.concatenate([d.train, d.val, d.test])) if t < 256}
        assert len(present) == 1  # only its own id's documents
        letters.append(present.pop())
    assert letters == ["a", "b", "c", "d"]  # u0..u3 in sorted order, one device each
    assert [d.name for d in devices] == [f"user_id=u{k}" for k in range(K)]
    with pytest.raises(DataError, match="5 devices but only 4 distinct 'user_id' values"):
        build_federation(data, ByteTokenizer(), 5, 0)


def test_the_record_holds_each_devices_sizes_and_mix(tmp_path: Path) -> None:
    data = spec(labelled_file(tmp_path), tmp_path / "c", kind="dirichlet", alpha=0.5, column="label")
    record = partition_record(data, 8, seed=1)
    devices = build_federation(data, ByteTokenizer(), 8, 1)
    assert len(record["pool"]) == K and record["pool"][2].endswith("?label=2")
    for entry, d in zip(record["devices"], devices):
        assert entry["tokens"] == {"train": 400, "val": 100, "test": 100}
        by_label = entry["tokens_by_source"]["train"]
        counted = {s: int((d.train == 97 + int(s.rsplit("=", 1)[1])).sum()) for s in by_label}
        # the recorded per-label counts are the letters found in the device's tokens, minus the
        # eos tokens that cut documents (at most one in every 51 tokens)
        for s, n in by_label.items():
            assert counted[s] <= n and n - counted[s] <= n // 51 + 1


def test_natural_id_needs_a_column() -> None:
    with pytest.raises(ValueError, match="natural_id needs `column`"):
        PartitionSpec(kind="natural_id")


def test_a_run_records_the_partition_in_its_directory(run_text, tmp_path: Path) -> None:
    text = f"""
name: part
model: tiny-gpt2
data:
  users: [toy:a, toy:b]
  train_tokens: 1500
  val_tokens: 400
  test_tokens: 400
  cache_dir: {tmp_path / 'cache'}
  partition: {{kind: dirichlet, alpha: 0.3}}
training: {{local_steps: 1, batch_size: 2, seq_len: 32, eval_windows: 2}}
methods: [{{name: fedavg, kind: fedavg, rank: 2}}]
world:
  fleet: [{{count: 5, tier: phone_mid, link: wifi_home}}]
  server: {{rounds: 1, target_per_round: 3, over_selection: 1.0, deadline_s: 100000}}
"""
    run = run_text(text, tmp_path / "part.yaml", tmp_path / "runs")
    recorded = json.loads((run / "partition.json").read_text())
    data = DataSpec(users=["toy:a", "toy:b"], train_tokens=1500, val_tokens=400, test_tokens=400,
                    cache_dir=tmp_path / "cache", partition={"kind": "dirichlet", "alpha": 0.3})
    assert recorded == {"0": json.loads(json.dumps(partition_record(data, 5, 0)))}
    assert recorded["0"]["pool"] == ["toy:a", "toy:b"] and len(recorded["0"]["devices"]) == 5
    assert len({round(d["weights"].get("toy:a", 0.0), 6) for d in recorded["0"]["devices"]}) == 5  # own mixes
