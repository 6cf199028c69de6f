"""Pretrained: the frozen base model, no training and no communication (the paper's first row).

Every round is free: nothing downloaded or uploaded, zero FLOPs, and a device's "local update"
returns at once with an empty upload. Evaluation is the bare base model on the device's windows.
"""
from __future__ import annotations

import numpy as np
import torch

from simfed.learn.adapters import AdaptedModel
from simfed.learn.evaluate import evaluate_windows, evaluation_windows
from simfed.learn.methods.base import (
    Checkpointable, ClientInfo, EvalResult, LocalPlan, Method, NoDeviceCosts, Replicable, Split, Update,
)
from simfed.learn.spec import PretrainedSpec, TrainingSpec


class Pretrained(Method, NoDeviceCosts, Checkpointable, Replicable):
    spec_type = PretrainedSpec
    measured_model = "the frozen base model (no adapters, never trained)"

    def __init__(self, spec: PretrainedSpec, training: TrainingSpec, model: AdaptedModel) -> None:
        self.name = spec.name
        self.spec = spec
        self.model = model
        self.seq_len = training.seq_len
        self.eval_windows = training.eval_windows
        self.clients: dict[int, ClientInfo] = {}
        self._windows: dict[tuple[int, str], np.ndarray] = {}

    def setup(self, clients: list[ClientInfo], seed: int) -> None:
        self.clients = {c.client_id: c for c in clients}

    def download(self, client: int) -> dict[str, torch.Tensor]:
        return {}

    def local_update(self, client: int, received: dict[str, torch.Tensor], plan: LocalPlan) -> Update:
        return Update(client=client, upload={}, n_tokens=0, train_loss=float("nan"))

    def aggregate(self, updates: list[Update], round_index: int) -> None:
        """Nothing to merge."""

    def evaluate(self, client: int, split: Split = "test") -> EvalResult:
        key = (client, split)
        if key not in self._windows:
            tokens = getattr(self.clients[client].data, split)
            self._windows[key] = evaluation_windows(tokens, self.seq_len, self.eval_windows)
        return evaluate_windows(self.model, None, self._windows[key])

    def describe_client(self, client: int) -> str:
        return "base model"

    def state_dict(self) -> dict:
        """Nothing changes as the run goes."""
        return {"tensors": {}, "clients": {}, "meta": {}}

    def load_state_dict(self, state: dict) -> None:
        pass

    def export_client(self, client: int) -> tuple[dict, dict] | None:
        return None  # a device holds nothing of its own

    def import_client(self, client: int, packed: tuple[dict, dict] | None) -> None:
        pass
