"""Centralized: one LoRA trained on the pooled training data of all devices — an upper bound that ignores privacy.

Simulated as FedAvg in which every device draws its batches from the POOLED training split (the
concatenation of all devices' training tokens, so a batch is a uniform sample over all data) and
the server averages: local SGD on i.i.d. data, i.e. one model trained on the union with a large
effective batch, costed like FedAvg (same bytes and FLOPs a round). The model measured on every
device's test split is that single model: the server's, after the round's averaging.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from simfed.learn.adapters import AdaptedModel, AdapterShape, copy_into
from simfed.learn.evaluate import evaluate_windows
from simfed.learn.methods.base import ClientInfo, EvalResult, LocalPlan, Method, Split, Update
from simfed.learn.methods.common import recipe_for
from simfed.learn.methods.federation import SERVER_KEY, AdapterFederation, torch_generator
from simfed.learn.spec import MethodSpec, TrainingSpec


def pooled(clients: list[ClientInfo]) -> list[ClientInfo]:
    """The clients with their training split replaced by everyone's training tokens, concatenated."""
    train = np.concatenate([c.data.train for c in sorted(clients, key=lambda c: c.client_id)])
    train.setflags(write=False)
    return [dataclasses.replace(c, data=dataclasses.replace(c.data, train=train)) for c in clients]


class Centralized(Method):
    measured_model = "the single model trained on the pooled data (the server's, after each round's averaging)"

    def __init__(self, spec: MethodSpec, training: TrainingSpec, model: AdaptedModel) -> None:
        self.name = spec.name
        self.spec = spec
        self.fed = AdapterFederation(model, recipe_for(spec, training), lambda name: True, training.eval_windows)
        self.shape = AdapterShape(1, spec.rank, spec.rank)

    def setup(self, clients: list[ClientInfo], seed: int) -> None:
        self.fed.setup(pooled(clients), {c.client_id: self.shape for c in clients}, self.shape, seed)

    def download(self, client: int) -> dict[str, torch.Tensor]:
        return self.fed.download(client)

    def local_update(self, client: int, received: dict[str, torch.Tensor], plan: LocalPlan) -> Update:
        return self.fed.local_update(client, received, plan)

    def aggregate(self, updates: list[Update], round_index: int) -> None:
        if updates:
            self.fed.mean_into_server(updates, self.fed.client_weights(updates, self.spec.aggregation_weights))

    def evaluate(self, client: int, split: Split = "test") -> EvalResult:
        adapters = self.fed.model.new_adapters(self.shape, torch_generator(self.fed.seed, SERVER_KEY))
        copy_into(adapters, self.fed.server)
        return evaluate_windows(self.fed.model, adapters, self.fed.windows(client, split), self.fed.eval_batch)

    def upload_shapes(self, client: int) -> dict[str, tuple[int, ...]]:
        return self.fed.shapes_of(client, self.fed.shared_names(client))

    def download_shapes(self, client: int) -> dict[str, tuple[int, ...]]:
        return self.upload_shapes(client)

    def round_flops(self, client: int) -> float:
        return self.fed.round_flops(client)

    def describe_client(self, client: int) -> str:
        return f"LoRA r{self.spec.rank}, pooled data"
