"""FedProx (Li et al. 2020) on LoRA: a simfed method written outside simfed.

FedAvg's server (a mean of the uploads) with FedProx's local objective: every expert step
minimises CE + (μ/2)·‖θ − θ_t‖², θ_t being the adapters the device started the round from (the
global model it downloaded: all of a device's adapters are shared here). With μ = 0 this is
FedAvg bit for bit, which the tests use as an independent check.

Nothing in simfed changes for it: a scenario names it `kind: my_method:FedProx` (with this folder
on PYTHONPATH) or, once this folder is pip-installed, `kind: fedprox` (the entry point declared
in pyproject.toml).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, PositiveInt

from simfed.learn.adapters import AdaptedModel, DeviceAdapters
from simfed.learn.methods.adapter_method import AdapterMethod
from simfed.learn.methods.base import LocalPlan, Update
from simfed.learn.spec import MethodSpec, TrainingSpec

# FLOPs per adapter parameter and expert step of the proximal term: forward θ − θ_t, its square
# and the sum (3), backward μ·(θ − θ_t) added to the gradient (2)
PROX_FLOPS_PER_PARAMETER = 5


class FedProxSpec(MethodSpec):
    """The scenario keys of `kind: fedprox` (besides `name` and `kind`); any other key is an error."""

    rank: PositiveInt = 8  # LoRA rank on attention and MLP
    mu: float = Field(0.01, ge=0)  # proximal weight μ
    aggregation_weights: Literal["uniform", "tokens"] = "tokens"  # FedProx weighs devices by their data


class FedProx(AdapterMethod):
    """One LoRA per device, all of it shared; the verbs FedAvg has, plus the proximal term."""

    spec_type = FedProxSpec

    def __init__(self, spec: FedProxSpec, training: TrainingSpec, model: AdaptedModel) -> None:
        super().__init__(spec, training, model, shared=lambda name: True)

    def local_update(self, client: int, received: dict[str, torch.Tensor], plan: LocalPlan) -> Update:
        mu = self.spec.mu
        start: list[torch.Tensor] = []  # θ_t, taken at the first step (before any optimizer step)

        def proximal(adapters: DeviceAdapters) -> torch.Tensor:
            params = adapters.expert_parameters()
            if not start:
                start.extend(p.detach().clone() for p in params)
            return 0.5 * mu * sum(((p - p0) ** 2).sum() for p, p0 in zip(params, start))

        return self.fed.local_update(client, received, plan, regulariser=proximal)

    def round_flops(self, client: int) -> float:
        """FedAvg's FLOPs plus the proximal term's, per adapter parameter and step."""
        parameters = sum(math.prod(s) for s in self.upload_shapes(client).values())
        return self.fed.round_flops(client) + self.fed.recipe.local_steps * PROX_FLOPS_PER_PARAMETER * parameters

    def describe_client(self, client: int) -> str:
        return f"LoRA r{self.spec.rank}, FedProx μ={self.spec.mu:g}"
