"""`output.save_models`: keep each device's measured model in the run directory.

    RUN_DIR/models/<method>/seed<seed>/final/device-<d>.safetensors      (final, every_N)
    RUN_DIR/models/<method>/seed<seed>/round-<N>/device-<d>.safetensors  (every_N)

The model saved is the one the evaluation of that round measured (simfed/learn/export.py
`saved_device`), so an exported adapter scores what metrics.csv says. `simfed export` reads these.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simfed.learn.export import DEVICE_FILE, can_save, save_device, saved_device

MODELS_DIR = "models"


def models_dir(run_dir: Path, method: str, seed: int, tag: str = "final") -> Path:
    return Path(run_dir) / MODELS_DIR / method / f"seed{seed}" / tag


@dataclass(frozen=True)
class ModelSaver:
    """What `output.save_models` asks for, over one run directory."""

    policy: str  # none | final | every_N
    run_dir: Path

    @property
    def every(self) -> int | None:
        return int(self.policy.split("_", 1)[1]) if self.policy.startswith("every_") else None

    def save(self, method: Any, seed: int, n_clients: int, tag: str) -> None:
        if self.policy == "none" or not can_save(method):
            return
        folder = models_dir(self.run_dir, method.name, seed, tag)
        for device in range(n_clients):
            save_device(saved_device(method, device), folder / DEVICE_FILE.format(device=device), method.name)

    def on_round_end(self, method: Any, seed: int, n_clients: int, round_done: int) -> None:
        """After the round's evaluation: every_N keeps round N, 2N, ..."""
        every = self.every
        if every is not None and round_done % every == 0:
            self.save(method, seed, n_clients, f"round-{round_done}")

    def on_method_end(self, method: Any, seed: int, n_clients: int) -> None:
        self.save(method, seed, n_clients, "final")
