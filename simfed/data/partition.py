"""Federated partitioners: iid, Dirichlet over a pool of sources or labels, natural ids over a column.

`data.partition` turns the users of a scenario into a POOL and gives every device its own mixture
over it, for any number of devices:

- `iid`: every device draws from the pool in equal shares;
- `dirichlet`: device i's shares q_i ~ Dir(alpha · 1) over the pool (Hsu et al. 2019, the split
  flwr-datasets' `DirichletPartitioner` and FedScale use): alpha → 0 gives one-source devices,
  alpha → ∞ the iid split;
- `natural_id`: one device per value of a column of ONE source (a user id, an author), device i
  taking the i-th value in sorted order.

With `column` the pool is not the users' sources but each source split by that column's values
(`src?column=value`, the equality filter of `parse_source`), so `dirichlet` over labels is a
Dirichlet over the label-filtered sources. The devices' mixtures then go through the ordinary
allocation of `federated.build_federation`: disjoint ranges of each source's shuffled stream, exact
token counts (a device's share of each source is apportioned by largest remainder).

Library: the column values are read with HF `datasets` (`Dataset.unique`), the Dirichlet draw is
numpy's. flwr-datasets' partitioners were the first choice, but its current release (0.6.1)
requires datasets < 5 and this project runs datasets 5.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from .spec import DataError, PartitionSpec, parse_source

PARTITION_KEY = 0x9A27  # SeedSequence key of the partition draw (never a device id)


@dataclass(frozen=True)
class DeviceShare:
    """One device's mixture over the pool (weights sum to 1)."""

    device: int
    weights: dict[str, float]


def column_values(source: str, column: str, cache_dir: Path | None) -> list[str]:
    """The distinct values of `column` in a hub or local source (after its own filters), as the
    strings `parse_source` filters compare against; integers in numeric order."""
    from .corpora import resolve_cache_dir
    from .sources.local_files import _apply_filters, _load

    ref = parse_source(source)
    if ref.kind not in ("hf", "local"):
        raise DataError(f"partition.column: source '{source}' has no columns (only hub or local datasets do)")
    ds = _apply_filters(_load(ref, resolve_cache_dir(cache_dir) / "hf"), ref)
    if column not in ds.column_names:
        raise DataError(f"partition.column: source '{source}' has no column '{column}'; "
                        f"columns: {', '.join(ds.column_names)}")
    values = [str(v) for v in ds.unique(column)]
    numeric = all(v.lstrip("-").isdigit() for v in values)
    return sorted(values, key=int) if numeric else sorted(values)


def with_filter(source: str, column: str, value: str) -> str:
    return f"{source}{'&' if '?' in source else '?'}{column}={value}"


def pool_of(sources: list[str], spec: PartitionSpec, cache_dir: Path | None) -> list[str]:
    """The pool: the sources themselves, or each split by `spec.column` into one filtered source per value."""
    if not spec.column:
        return list(dict.fromkeys(sources))
    pool = []
    for source in dict.fromkeys(sources):
        values = spec.values if spec.values is not None else column_values(source, spec.column, cache_dir)
        pool += [with_filter(source, spec.column, v) for v in values]
    return pool


def shares(pool: list[str], spec: PartitionSpec, n_devices: int, seed: int) -> list[DeviceShare]:
    """Every device's mixture over `pool` (deterministic in the seed)."""
    if spec.kind == "natural_id":
        if n_devices > len(pool):
            raise DataError(f"partition natural_id: {n_devices} devices but only {len(pool)} distinct "
                            f"'{spec.column}' values; use at most {len(pool)} devices")
        return [DeviceShare(i, {pool[i]: 1.0}) for i in range(n_devices)]
    if spec.kind == "iid":
        return [DeviceShare(i, {s: 1.0 / len(pool) for s in pool}) for i in range(n_devices)]
    rng = np.random.default_rng(np.random.SeedSequence([seed, PARTITION_KEY]))
    q = rng.dirichlet(np.full(len(pool), spec.alpha), size=n_devices)  # (devices, pool)
    return [DeviceShare(i, {s: float(w) for s, w in zip(pool, row) if w > 0}) for i, row in enumerate(q)]


def partitioned(spec, n_devices: int, seed: int):
    """A copy of the DataSpec `spec` with one user per device, each with its partition mixture
    (every split drawn from it) and the data-level sizes; `partition` cleared."""
    from .spec import UserSpec

    part = spec.partition
    pool = pool_of([u.source for u in spec.users], part, spec.cache_dir)
    users = []
    for share in shares(pool, part, n_devices, seed):
        top = max(share.weights, key=share.weights.__getitem__)
        name = top.rsplit("=", 1)[-1] if part.kind == "natural_id" else f"{part.kind}{share.device}"
        user = UserSpec(source=top, name=f"{part.column}={name}" if part.kind == "natural_id" else name,
                        train_tokens=spec.train_tokens, val_tokens=spec.val_tokens, test_tokens=spec.test_tokens)
        user._mixture = dict(share.weights)
        user._defaulted = {"train", "val", "test"}
        users.append(user)
    return spec.model_copy(update={"users": users, "partition": None})
