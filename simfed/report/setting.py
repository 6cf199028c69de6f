"""The methods' setting as `simfed report` prints it: matching rule, load balancing, parameters per device.

Read from summary.json (`setting`, written by the runner from simfed/learn/params.py), so that a
reader sees at once how every baseline was matched to CoMiGS and which LB form each method used.
"""
from __future__ import annotations

from typing import Any


def _setting_of(entry: dict[str, Any]) -> dict[str, Any] | None:
    """A method's setting; with several seeds whose fleets differ, the first seed's."""
    if isinstance(entry.get("setting"), dict):
        return entry["setting"]
    for seed_entry in (entry.get("seeds") or {}).values():
        if isinstance(seed_entry.get("setting"), dict):
            return seed_entry["setting"]
    return None


def per_device(counts: list[int]) -> str:
    """'0: 47,616; 1–3: 26,880' — runs of consecutive devices with the same count."""
    parts, start = [], 0
    for i in range(1, len(counts) + 1):
        if i == len(counts) or counts[i] != counts[start]:
            ids = str(start) if i - 1 == start else f"{start}–{i - 1}"
            parts.append(f"{ids}: {counts[start]:,}")
            start = i
    return "; ".join(parts)


def setting_markdown(summary: dict[str, Any]) -> str:
    """A markdown section, or '' for a run whose summary predates the setting."""
    rows = []
    for name, entry in (summary.get("methods") or {}).items():
        setting = _setting_of(entry)
        if setting is None:
            continue
        trainable, held = setting.get("trainable_params", []), setting.get("held_params", [])
        params = per_device(trainable) if trainable else "—"
        if held and held != trainable:
            params += f" (held, frozen included: {per_device(held)})"
        rows.append(f"| {name} | {setting.get('match', '')} | {setting.get('lb_form', '')} | {params} |")
    if not rows:
        return ""
    return "\n".join([
        "## Setting: parameter matching, load balancing, trainable parameters per device",
        "",
        "| method | matching rule | load balancing | trainable parameters (device: count) |",
        "|---|---|---|---|",
        *rows,
        "",
        "Trainable = what each device's optimizers step, counted from its tensors at setup "
        "(HetLoRA before any self-pruning). Load balancing is constant when E = top-k = 2.",
    ])
