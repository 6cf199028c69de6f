"""What each device of a partitioned run gets, written to RUN_DIR/partition.json.

Apart from `partition.py` because it needs `federated.py`'s allocation (`_apportion`), and
`federated.py` needs the partitioner: one module each way, no import cycle.
"""
from __future__ import annotations

from pathlib import Path

from .federated import SPLITS, _apportion
from .partition import partitioned, pool_of


def partition_record(spec, n_devices: int, seed: int) -> dict:
    """What each device gets, for the run directory (partition.json): its mixture over the pool and
    its tokens per split and per pool source (the exact counts `build_federation` allocates)."""
    devices = []
    for i, user in enumerate(partitioned(spec, n_devices, seed).users):
        tokens = {split: {s: n for s, n in _apportion(user.size(split), user._mixture).items() if n}
                  for split in SPLITS}
        devices.append({"device": i, "name": user.name, "weights": user._mixture,
                        "tokens": {split: sum(t.values()) for split, t in tokens.items()},
                        "tokens_by_source": tokens})
    return {"kind": spec.partition.kind, "alpha": spec.partition.alpha, "column": spec.partition.column,
            "pool": pool_of([u.source for u in spec.users], spec.partition, spec.cache_dir), "devices": devices}


def write_partition(path: Path, spec, n_devices: int, seed: int) -> None:
    """Add this seed's `partition_record` to `path` (partition.json: {seed: record})."""
    import json

    records = json.loads(path.read_text()) if path.exists() else {}
    records[str(seed)] = partition_record(spec, n_devices, seed)
    path.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
