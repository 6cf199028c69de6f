"""The explicit registry from a scenario's `kind` to a method class."""
from __future__ import annotations

from simfed.learn.adapters import AdaptedModel
from simfed.learn.methods.base import Method
from simfed.learn.methods.centralized import Centralized
from simfed.learn.methods.comigs import CoMiGS
from simfed.learn.methods.fedavg import FedAvg
from simfed.learn.methods.ffa_lora import FFALoRA
from simfed.learn.methods.flexlora import FlexLoRA
from simfed.learn.methods.hetlora import HetLoRA
from simfed.learn.methods.joint_moe import JointMoE
from simfed.learn.methods.local import Local
from simfed.learn.methods.pcl import PCL
from simfed.learn.methods.pretrained import Pretrained
from simfed.learn.spec import MethodSpec, TrainingSpec


def comigs(spec: MethodSpec, training: TrainingSpec, model: AdaptedModel) -> CoMiGS:
    """CoMiGS; `router_split: train` is the "-tr" ablation (router phases on training batches)."""
    return CoMiGS(spec, training, model, router_split=spec.router_split)


METHODS = {
    "comigs": comigs,
    "hetlora": HetLoRA,
    "fedavg": FedAvg,
    "local": Local,
    "ffa_lora": FFALoRA,
    "flexlora": FlexLoRA,
    "pcl": PCL,
    "pretrained": Pretrained,
    "centralized": Centralized,
    "local_moe": JointMoE,
    "fedavg_moe": JointMoE,
    "pfedmoe": JointMoE,
}


def build_method(spec: MethodSpec, training: TrainingSpec, model: AdaptedModel) -> Method:
    return METHODS[spec.kind](spec, training, model)
