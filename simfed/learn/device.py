"""Where the learning runs and in what precision: the torch device and the autocast dtype of a run.

Kept with the learning (not in the run glue) because the runner, the Ray replicas and the
calibration all load the model the same way, and none of them should import another for it.
"""
from __future__ import annotations

import torch

from simfed.learn.adapters import AdaptedModel
from simfed.learn.base_model import load_base_model
from simfed.learn.cpu_precision import PrecisionChoice, choose_cpu_precision
from simfed.learn.model_card import ModelCard
from simfed.learn.spec import TrainingSpec


def pick_device(choice: str) -> torch.device:
    """`training.device`: cuda when asked, or under `auto` when a GPU is there; the CPU otherwise."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run: bf16 when asked, or under `auto` on a CUDA GPU with bf16
    support; None (plain fp32) otherwise."""
    if precision == "bfloat16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def load_adapted_model(card: ModelCard, training: TrainingSpec, device_choice: str | None = None) -> AdaptedModel:
    """The frozen base model of `card` on the run's device, wrapped for adapters as `training`
    (the scenario's `training:` section) says: its precision, and its mixtures run as
    `expert_compute` and `fuse_mixture` say (simfed/learn/lora.py MixtureMLP). `device_choice`
    overrides `training.device` (a Ray worker is placed by Ray, not by the scenario)."""
    device = pick_device(training.device if device_choice is None else device_choice)
    return AdaptedModel(load_base_model(card, device), autocast_dtype(training.precision, device),
                        training.expert_compute, training.fuse_mixture)


def settle_cpu_precision(model: AdaptedModel, training: TrainingSpec) -> PrecisionChoice | None:
    """Under `precision: auto` on a CPU, set `model`'s autocast to what this host runs faster
    (simfed/learn/cpu_precision.py) and say what was chosen and why; None when nothing was open
    to choose (a GPU, or a precision the scenario names)."""
    if training.precision != "auto" or model.device.type != "cpu":
        return None
    choice = choose_cpu_precision(model, training.batch_size, training.seq_len)
    model.autocast = torch.bfloat16 if choice.precision == "bfloat16" else None
    return choice
