"""What a resume checks before it trusts its replay of the simulated world (simfed/run/checkpoint.py).

The replay rebuilds the world from the scenario, the seed and the logged `cost()` answers. Two
things can make it diverge while the devices are still asked for in the same order: the inputs
the world reads beyond the scenario (a tier of `$SIMFED_PROFILES`, a built-in profile of another
simfed, an availability trace or device data file edited since) and the engine itself. So a
checkpoint records both — a fingerprint of those inputs and the tally (simulated time, bytes,
energy, counters) at the checkpointed round's end — and a resume refuses, in one line naming
what changed, when either disagrees.
"""
from __future__ import annotations

import hashlib
from typing import Any

from simfed.sim.profiles import load_links, load_tiers

# Tally fields that a faithful replay reproduces exactly (the live-view ones are left out)
REPLAYED = ("sim_time_s", "rounds", "updates_aggregated", "bytes_down", "bytes_up", "energy_j", "flops",
            "compute_s", "dropouts", "stragglers", "stale", "diverged", "wasted_bytes", "wasted_compute_s",
            "wasted_energy_j", "server_flops", "server_compute_s")


def _digest(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()[:16]


def world_fingerprint(world: Any) -> dict[str, str]:
    """A digest of each input the world reads beyond the scenario: each tier and link it uses
    (every field, from whichever profile file) and each data file it names (its bytes)."""
    tiers, links = load_tiers(), load_links()
    out: dict[str, str] = {}
    for group in world.fleet:
        out[f"tier {group.tier!r}"] = _digest(repr(tiers[group.tier]))
        out[f"link {group.link!r}"] = _digest(repr(links[group.link]))
        paths = [getattr(group.availability, "path", None), group.compute_scores, group.link_trace]
        for path in filter(None, paths):
            try:
                with open(path, "rb") as f:
                    out[f"file {path}"] = _digest(f.read())
            except OSError as err:
                out[f"file {path}"] = f"unreadable ({err.strerror})"
    return out


def fingerprint_change(saved: dict[str, str] | None, now: dict[str, str]) -> str | None:
    """None if the inputs are as checkpointed; otherwise what changed, in a few words."""
    if saved is None:  # a checkpoint written before these checks
        return None
    changed = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    if not changed:
        return None
    hint = " ($SIMFED_PROFILES or simfed's built-in profiles?)" if any(k.startswith(("tier", "link")) for k in changed) else ""
    return f"{', '.join(changed)} changed since the checkpoint{hint}"


def tally_record(tally: Any) -> dict[str, Any]:
    summary = tally.as_summary()
    return {k: summary[k] for k in REPLAYED if k in summary}


def tally_change(saved: dict[str, Any] | None, tally: Any) -> str | None:
    """None if the replay reached the checkpointed round's end with the checkpoint's tally;
    otherwise the fields that differ, replayed value against checkpointed."""
    if saved is None:
        return None
    now = tally_record(tally)
    diffs = [f"{k} {now.get(k)!r} (checkpoint: {saved[k]!r})" for k in saved if now.get(k) != saved[k]]
    return ", ".join(diffs) if diffs else None
