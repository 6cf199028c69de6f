"""The explicit registry from a scenario's `kind` to a method class."""
from __future__ import annotations

from simfed.learn.adapters import AdaptedModel
from simfed.learn.methods.base import Method
from simfed.learn.methods.comigs import CoMiGS
from simfed.learn.methods.fedavg import FedAvg
from simfed.learn.methods.hetlora import HetLoRA
from simfed.learn.methods.local import Local
from simfed.learn.spec import MethodSpec, TrainingSpec

METHODS = {"comigs": CoMiGS, "hetlora": HetLoRA, "fedavg": FedAvg, "local": Local}


def build_method(spec: MethodSpec, training: TrainingSpec, model: AdaptedModel) -> Method:
    return METHODS[spec.kind](spec, training, model)
