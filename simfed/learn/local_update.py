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

Several devices train as ONE batch (`train_devices`; `executor.batch_devices`): each device's round
is a list of micro-steps (`plan_micro_steps`: expert step s, or step j of a router phase), and the
i-th micro-step of every device runs in one forward/backward whose rows are grouped by device, each
through its own adapters (`AdaptedModel.using_rows`). The loss is Σ_k (device k's own mean CE + its
own load-balancing and regulariser terms): nothing in device k's term depends on another device's
tensors (the base is frozen, attention and norms act within a sequence), so the gradient each
device's leaves receive is its own. Each device keeps its own AdamW, so bias correction at its own
step count, its lr from the schedule and weight decay are the sequential code's. Which tensors get
gradients is set per device, so one device can be in a router phase while another trains experts
in the same forward; a device whose round has fewer micro-steps drops out of the later batches.
One device alone is the sequential path, bit for bit. No host synchronisation inside the loop:
the windows of the whole round are drawn up front (same rng, same order) and moved to the device
once; losses stay tensors until one `tolist()` at the end.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal

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
    """`router_steps` steps on the routers only, by themselves; returns the mean loss. (Inside a
    round the loop runs these steps as router micro-steps, `train_devices`.)"""
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
            losses.append(loss.detach())
    finally:
        _train_only(adapters, optimised(state.expert_opt))
    return float(np.mean(torch.stack(losses).tolist())) if losses else float("nan")  # one host sync, at the end


MicroKind = Literal["expert", "router"]


@dataclass(frozen=True)
class MicroStep:
    """One optimizer step of a device's round: expert step `index` of the round, or step `index`
    of a router phase."""

    kind: MicroKind
    index: int


def plan_micro_steps(recipe: Recipe, global_step: int, has_router_opt: bool) -> list[MicroStep]:
    """The round's steps in order: `local_steps` expert steps, and after each one that brings the
    device's global step to a multiple of τ, a router phase of `router_steps` steps."""
    plan: list[MicroStep] = []
    for s in range(recipe.local_steps):
        plan.append(MicroStep("expert", s))
        global_step += 1
        if has_router_opt and global_step % recipe.tau == 0:
            plan.extend(MicroStep("router", j) for j in range(recipe.router_steps))
    return plan


@dataclass
class LocalWork:
    """One device's round of local training, as `train_devices` needs it.

    `progress_at(s)` maps the round's step s to the run's progress in [0, 1] for the lr schedule.
    `regulariser` adds a term to the expert loss (HetLoRA's self-pruning); `after_step` runs after
    every expert optimizer step (HetLoRA keeps its pruned slices at zero there). `result` is set
    by `train_devices`: (mean train CE of the expert steps, training tokens)."""

    state: ClientState
    train_tokens: np.ndarray
    val_tokens: np.ndarray
    recipe: Recipe
    progress_at: Callable[[int], float]
    rng: np.random.Generator
    regulariser: Callable[[DeviceAdapters], torch.Tensor] | None = None
    after_step: Callable[[DeviceAdapters], None] | None = None
    result: tuple[float, int] | None = None


@dataclass
class _Running:
    """A device inside `train_devices`: its micro-steps, its windows (n_micro, b, T+1) on the
    model's device, and its expert-step losses (tensors until the end)."""

    work: LocalWork
    steps: list[MicroStep]
    windows: torch.Tensor
    losses: list[torch.Tensor] = field(default_factory=list)


def _start(work: LocalWork, device: torch.device) -> _Running:
    """Plan the device's round and draw all its windows, in the order the steps draw them."""
    state, recipe = work.state, work.recipe
    steps = plan_micro_steps(recipe, state.global_step, state.router_opt is not None)
    router_tokens = work.val_tokens if recipe.router_split == "val" else work.train_tokens
    drawn = [sample_windows(work.train_tokens if m.kind == "expert" else router_tokens, recipe.seq_len,
                            recipe.batch_size, work.rng) for m in steps]
    windows = torch.as_tensor(np.stack(drawn).astype(np.int64, copy=False), device=device)
    return _Running(work, steps, windows)


def _step_loss(run: _Running, step: MicroStep, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Device `run`'s own objective on its rows: mean CE (+ LB, + regulariser), as the sequential
    loop forms it; records the CE of an expert step."""
    recipe, adapters = run.work.recipe, run.work.state.adapters
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
    lb = adapters.load_balancing_loss()
    if step.kind == "router":
        return loss + recipe.lb_lambda * lb if lb is not None else loss
    run.losses.append(loss.detach())
    total = loss
    if lb is not None and recipe.lb_lambda > 0:
        total = total + recipe.lb_lambda * lb
    if run.work.regulariser is not None:
        total = total + run.work.regulariser(adapters)
    return total


def _prepare_step(run: _Running, step: MicroStep) -> torch.optim.Optimizer:
    """Gradients on for what this step trains; the expert lr from the schedule. The optimizer to step."""
    state = run.work.state
    if step.kind == "router":
        assert state.router_opt is not None
        _train_only(state.adapters, optimised(state.router_opt))
        return state.router_opt
    _train_only(state.adapters, optimised(state.expert_opt))
    lr = cosine_lr(run.work.recipe.lr, run.work.progress_at(step.index))
    for group in state.expert_opt.param_groups:
        group["lr"] = lr
    return state.expert_opt


def _finish_step(run: _Running, step: MicroStep, opt: torch.optim.Optimizer) -> None:
    state = run.work.state
    opt.step()
    opt.zero_grad(set_to_none=True)
    if step.kind == "expert":
        if run.work.after_step is not None:
            run.work.after_step(state.adapters)
        state.global_step += 1


def train_devices(model: AdaptedModel, works: list[LocalWork]) -> None:
    """One round of local training of every device in `works`, together (module docstring);
    sets each `work.result`. One device: the sequential loop exactly."""
    if not works:
        return
    if len(works) > 1:
        if len({w.recipe.batch_size for w in works}) != 1:
            raise ValueError("devices trained in one batch must share the batch size")
        if len({id(w.state) for w in works}) != len(works):
            raise ValueError("a device appears twice in one batch")
        dropout = getattr(model.base.card, "dropout", 0.0)
        if dropout:  # dropout masks come from one global stream: a batch draws them differently
            raise ValueError(f"batched devices need dropout 0 (the model card sets {dropout}); use batch_devices: 1")
    runs = [_start(w, model.device) for w in works]
    model.model.train()
    try:
        for i in range(max(len(r.steps) for r in runs)):
            active = [r for r in runs if i < len(r.steps)]
            opts = [_prepare_step(r, r.steps[i]) for r in active]
            rows = [r.windows[i] for r in active]
            windows = rows[0] if len(rows) == 1 else torch.cat(rows)
            with model.using_rows([r.work.state.adapters for r in active]):
                # each device's logits by itself (`device_logits`: never the whole batch's, nor
                # slices of it, whose backward would write K zero tensors of its size)
                logits = model.device_logits(windows[:, :-1], len(active))
                total = None
                for r, own, targets in zip(active, logits, windows[:, 1:].split(rows[0].shape[0])):
                    term = _step_loss(r, r.steps[i], own, targets)
                    total = term if total is None else total + term
                total.backward()
            for r, opt in zip(active, opts):
                _finish_step(r, r.steps[i], opt)
    finally:
        model.model.eval()
        for r in runs:
            _train_only(r.work.state.adapters, optimised(r.work.state.expert_opt))
    for r in runs:
        losses = torch.stack(r.losses).tolist() if r.losses else []  # the round's one host sync
        recipe = r.work.recipe
        r.work.result = (float(np.mean(losses)), recipe.local_steps * recipe.batch_size * recipe.seq_len)


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
    """Run one round of local training on one device's adapters; (mean train CE, tokens seen).

    The one-device case of `train_devices` (see `LocalWork` for the arguments)."""
    work = LocalWork(state, train_tokens, val_tokens, recipe, progress_at, rng, regulariser, after_step)
    train_devices(model, [work])
    assert work.result is not None
    return work.result
