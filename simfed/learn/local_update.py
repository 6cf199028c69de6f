"""The local loop of a device: expert steps on its training split, router phases on its validation split.

Exactly as `ALGORITHMS.md` specifies for CoMiGS: AdamW (β 0.9/0.95, wd 0.01) on the expert and
attention LoRA with a cosine schedule to lr/10 over the run; every τ expert steps (a per-device
global step counter that survives rounds) a router phase of `router_steps` AdamW steps at a
constant lr on the routers only, on validation batches. The two optimizers never see each other's
gradients: the parameters of the other group have `requires_grad` off during a phase, so no
gradient is even computed for them, and each optimizer zeroes its gradients (to None) after
stepping. Methods without routers simply never enter a router phase. What trains in an expert step
is exactly what the expert optimizer holds: with `joint_router` (Local-/FedAvg-MoE, pFedMoE) that
includes the routers and there are no router phases; a tensor left out of it (FFA-LoRA's A) is frozen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from simfed.data.federated import sample_windows
from simfed.learn.adapters import AdaptedModel, DeviceAdapters

ADAM_BETAS = (0.9, 0.95)


@dataclass(frozen=True)
class Recipe:
    """The numbers of the local loop (from the scenario's `training:` and the method's spec)."""

    local_steps: int
    batch_size: int
    seq_len: int
    lr: float
    weight_decay: float = 0.01
    lb_lambda: float = 0.0
    tau: int = 30
    router_steps: int = 10
    router_lr: float = 2e-3
    router_split: str = "val"  # "val" (CoMiGS) or "train" (the -tr ablation)
    joint_router: bool = False  # routers train in the expert optimizer's steps (Local-/FedAvg-MoE, pFedMoE)


@dataclass
class ClientState:
    """Everything a device keeps between rounds: adapters, optimizer states and its step counter."""

    adapters: DeviceAdapters
    expert_opt: torch.optim.Optimizer
    router_opt: torch.optim.Optimizer | None
    global_step: int = 0
    extra: dict = field(default_factory=dict)


def new_client_state(adapters: DeviceAdapters, recipe: Recipe) -> ClientState:
    """AdamW on the LoRA (and, with `joint_router`, the routers too); a router optimizer otherwise."""
    routers = adapters.router_parameters()
    trained = adapters.expert_parameters() + (routers if recipe.joint_router else [])
    expert_opt = torch.optim.AdamW(trained, lr=recipe.lr, betas=ADAM_BETAS, weight_decay=recipe.weight_decay)
    if recipe.joint_router:
        routers = []
    router_opt = (
        torch.optim.AdamW(routers, lr=recipe.router_lr, betas=ADAM_BETAS, weight_decay=recipe.weight_decay)
        if routers
        else None
    )
    return ClientState(adapters, expert_opt, router_opt)


def cosine_lr(peak: float, progress: float) -> float:
    """Cosine from `peak` to peak/10 as `progress` goes 0 → 1 (no warm-up)."""
    floor = peak / 10.0
    progress = min(max(progress, 0.0), 1.0)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def batch_rng(seed: int, client: int, round_index: int, purpose: int) -> np.random.Generator:
    """The batches a device draws depend only on (seed, client, round, purpose): common random numbers."""
    return np.random.default_rng([seed, 7919, client, round_index, purpose])


def next_token_loss(model: AdaptedModel, windows: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting windows[:, 1:] from windows[:, :-1]."""
    logits = model.logits(windows[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), windows[:, 1:].reshape(-1))


def optimised(opt: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    """The parameters an optimizer steps."""
    return [p for group in opt.param_groups for p in group["params"]]


def _train_only(adapters: DeviceAdapters, params: list[torch.nn.Parameter]) -> None:
    """Gradients for `params` and for no other adapter tensor (frozen tensors, e.g. FFA-LoRA's A, stay so)."""
    ids = {id(p) for p in params}
    for p in adapters.parameters():
        p.requires_grad_(id(p) in ids)


def _batch(tokens: np.ndarray, recipe: Recipe, rng: np.random.Generator, device: torch.device) -> torch.Tensor:
    windows = sample_windows(tokens, recipe.seq_len, recipe.batch_size, rng)
    return torch.as_tensor(np.asarray(windows, dtype=np.int64), device=device)


def router_phase(
    model: AdaptedModel, state: ClientState, tokens: np.ndarray, recipe: Recipe, rng: np.random.Generator
) -> float:
    """`router_steps` steps on the routers only; returns the mean loss."""
    adapters = state.adapters
    _train_only(adapters, optimised(state.router_opt))
    losses = []
    try:
        for _ in range(recipe.router_steps):
            windows = _batch(tokens, recipe, rng, model.device)
            loss = next_token_loss(model, windows)
            lb = adapters.load_balancing_loss()
            total = loss + recipe.lb_lambda * lb if lb is not None else loss
            total.backward()
            state.router_opt.step()
            state.router_opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
    finally:
        _train_only(adapters, optimised(state.expert_opt))
    return float(np.mean(losses)) if losses else float("nan")


def train_locally(
    model: AdaptedModel,
    state: ClientState,
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
    recipe: Recipe,
    progress_at: Callable[[int], float],
    rng: np.random.Generator,
    regulariser: Callable[[DeviceAdapters], torch.Tensor] | None = None,
    after_step: Callable[[DeviceAdapters], None] | None = None,
) -> tuple[float, int]:
    """Run one round of local training on the attached adapters; (mean train CE, tokens seen).

    `progress_at(s)` maps the round's step s to the run's progress in [0, 1] for the lr schedule.
    `regulariser` adds a term to the expert loss (HetLoRA's self-pruning); `after_step` runs after
    every expert optimizer step (HetLoRA keeps its pruned slices at zero there).
    """
    adapters = state.adapters
    _train_only(adapters, optimised(state.expert_opt))
    router_tokens = val_tokens if recipe.router_split == "val" else train_tokens
    losses: list[float] = []
    with model.using(adapters):
        model.model.train()
        try:
            for s in range(recipe.local_steps):
                lr = cosine_lr(recipe.lr, progress_at(s))
                for group in state.expert_opt.param_groups:
                    group["lr"] = lr
                windows = _batch(train_tokens, recipe, rng, model.device)
                loss = next_token_loss(model, windows)
                total = loss
                lb = adapters.load_balancing_loss()
                if lb is not None and recipe.lb_lambda > 0:
                    total = total + recipe.lb_lambda * lb
                if regulariser is not None:
                    total = total + regulariser(adapters)
                total.backward()
                state.expert_opt.step()
                state.expert_opt.zero_grad(set_to_none=True)
                if after_step is not None:
                    after_step(adapters)
                losses.append(loss.item())
                state.global_step += 1
                if state.router_opt is not None and state.global_step % recipe.tau == 0:
                    router_phase(model, state, router_tokens, recipe, rng)
        finally:
            model.model.eval()
    return float(np.mean(losses)), recipe.local_steps * recipe.batch_size * recipe.seq_len
