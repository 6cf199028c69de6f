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

from simfed.learn.adapters import AdaptedModel, AdapterShape, copy_into
from simfed.learn.evaluate import evaluate_windows
from simfed.learn.methods.adapter_method import AdapterMethod
from simfed.learn.methods.base import ClientInfo, EvalResult, Split
from simfed.learn.methods.federation import SERVER_KEY, torch_generator
from simfed.learn.spec import CentralizedSpec, TrainingSpec


def pooled(clients: list[ClientInfo]) -> list[ClientInfo]:
    """The clients with their training split replaced by everyone's training tokens, concatenated."""
    train = np.concatenate([c.data.train for c in sorted(clients, key=lambda c: c.client_id)])
    train.setflags(write=False)
    return [dataclasses.replace(c, data=dataclasses.replace(c.data, train=train)) for c in clients]


class Centralized(AdapterMethod):
    spec_type = CentralizedSpec
    measured_model = "the single model trained on the pooled data (the server's, after each round's averaging)"

    def __init__(self, spec: CentralizedSpec, training: TrainingSpec, model: AdaptedModel) -> None:
        super().__init__(spec, training, model, shared=lambda name: True)
        self.shape = AdapterShape(1, spec.rank, spec.rank)

    def setup(self, clients: list[ClientInfo], seed: int) -> None:
        self.fed.setup(pooled(clients), {c.client_id: self.shape for c in clients}, self.shape, seed)

    def evaluate(self, client: int, split: Split = "test") -> EvalResult:
        adapters = self.fed.model.new_adapters(self.shape, torch_generator(self.fed.seed, SERVER_KEY))
        copy_into(adapters, self.fed.server)
        return evaluate_windows(self.fed.model, adapters, self.fed.windows(client, split), self.fed.eval_batch)

    def describe_client(self, client: int) -> str:
        return f"LoRA r{self.spec.rank}, pooled data"
