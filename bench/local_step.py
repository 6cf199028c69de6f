"""Wall-clock of one local training step on SmolLM2-135M: CoMiGS with E experts vs a plain peft LoRA.

Same tokens (batch 4 × 128, fixed seed), same AdamW (β 0.9/0.95, wd 0.01, lr 2e-3), two threads.
CoMiGS-1G(E-1)S: E MLP experts of rank 8 (top-2 router) + rank-8 attention LoRA, attached through
`AdaptedModel`, loss = CE + 0.01·LB; `--experts 2 4` measures 1G1S and 1G3S; `--fuse` adds each shape
with `training.fuse_mixture` (its compile happens in the warm-up steps). `--compute` picks the
host's expert path (simfed/learn/lora.py MixtureMLP): `dense` runs all E experts on every token
(the only path before top-k compute), `grouped` only each token's top-2, `auto` = grouped when
E > 2. peft: LoraConfig(r=8, alpha 16, rsLoRA) on q,k,v,o,gate,up,down of a fresh copy of the base
model. FLOPs of each step from `simfed.learn.flops.step_flops` (the top-2 work a device is charged;
peft's is the E = 1 shape), so FLOP/s = FLOPs / median step seconds. Steps of all shapes
alternate, so a busy machine slows them alike.

    .venv/bin/python bench/local_step.py [--steps 5] [--warmup 2] [--experts 2 4] [--compute auto dense]
        [--device cuda] [--precision bfloat16] [--model smollm2-135m-random]

`--device cuda` runs both on the GPU (`--precision bfloat16`: bf16 autocast for both, fp32 adapters
and AdamW); `--model smollm2-135m-random` is SmolLM2's architecture with random weights (the same
shapes and FLOPs) where the offline GGUF is missing.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from simfed.learn.adapters import AdaptedModel, AdapterShape
from simfed.learn.base_model import load_base_model
from simfed.learn.flops import ModelDims, step_flops
from simfed.learn.local_update import ADAM_BETAS, next_token_loss
from simfed.learn.model_card import load_card

BATCH, SEQ_LEN, RANK, LR, WD, LB_LAMBDA = 4, 128, 8, 2e-3, 0.01, 0.01
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def comigs_step_fn(model: AdaptedModel, ids: torch.Tensor, n_experts: int, compute: str, fused: bool = False):
    shape = AdapterShape(n_experts=n_experts, mlp_rank=RANK, attn_rank=RANK)
    adapters = model.new_adapters(shape, torch.Generator().manual_seed(0))
    params = adapters.expert_parameters()
    for p in adapters.router_parameters():
        p.requires_grad_(False)  # an expert step: routers frozen, as in train_locally
    opt = torch.optim.AdamW(params, lr=LR, betas=ADAM_BETAS, weight_decay=WD)
    model.model.train()

    def step() -> float:
        for site in model.mlp_sites:
            site.compute, site.fused = compute, fused
        with model.using(adapters):  # attached, under the model's autocast (if any)
            loss = next_token_loss(model, ids)
            lb = adapters.load_balancing_loss()
            total = loss + LB_LAMBDA * lb if lb is not None else loss
            total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step, shape


def peft_step_fn(card, ids: torch.Tensor, autocast: torch.dtype | None = None):
    from peft import LoraConfig, get_peft_model

    base = load_base_model(card, ids.device).model  # a fresh copy, never touched by AdaptedModel
    config = LoraConfig(r=RANK, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, use_rslora=True, bias="none")
    model = get_peft_model(base, config)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, betas=ADAM_BETAS, weight_decay=WD)
    model.train()

    def step() -> float:
        with torch.autocast(ids.device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            logits = model(input_ids=ids[:, :-1], use_cache=False).logits
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step, sum(p.numel() for p in params)


def timed(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def alternating_times(steps: dict[str, Callable[[], float]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each step, `repeats` times after `warmup` untimed rounds, the steps taking
    turns, so that background load hits all alike."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(repeats):
        for label, step in steps.items():
            times[label].append(timed(step))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default="smollm2-135m", help="a Llama-shaped card (tiny-llama: a smoke test)")
    parser.add_argument("--experts", type=int, nargs="+", default=[2], help="CoMiGS expert counts E (top-2)")
    parser.add_argument("--compute", nargs="+", default=["auto"], choices=["auto", "dense", "grouped"],
                        help="host expert paths to time (MixtureMLP.compute)")
    parser.add_argument("--fuse", action="store_true",
                        help="also time each CoMiGS shape with training.fuse_mixture (MixtureMLP._fused_dense, torch.compile)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                        help="bfloat16: autocast for both steps (adapters and AdamW stay fp32)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    card = load_card(args.model)
    rng = np.random.default_rng(0)
    autocast = torch.bfloat16 if args.precision == "bfloat16" else None
    model = AdaptedModel(load_base_model(card, args.device), autocast)
    vocab = int(model.model.config.vocab_size)
    ids = torch.as_tensor(rng.integers(0, vocab, size=(BATCH, SEQ_LEN + 1)), dtype=torch.long, device=args.device)
    dims = ModelDims.of(model)
    steps, shapes = {}, {}
    for e in args.experts:
        for compute in args.compute:
            for fused in ([False, True] if args.fuse else [False]):
                label = (f"comigs_1g{e - 1}s_{compute}" if e > 1 else f"comigs_e1_{compute}") + ("_fused" if fused else "")
                steps[label], shapes[label] = comigs_step_fn(model, ids, e, compute, fused)
    peft, peft_params = peft_step_fn(card, ids, autocast)
    steps["peft_lora"], shapes["peft_lora"] = peft, AdapterShape(1, RANK, RANK)
    times = alternating_times(steps, args.warmup, args.steps)
    print(f"# {args.model} on {args.device} ({args.precision}), batch {BATCH} x {SEQ_LEN}, {args.threads} threads, median of {args.steps} "
          f"after {args.warmup} warm-up; peft trainable params {peft_params}")
    per_s = {}
    for label, ts in times.items():
        flops = step_flops(dims, shapes[label], BATCH, SEQ_LEN, "experts")
        median = statistics.median(ts)
        per_s[label] = flops / median
        print(f"# {label}: charged step FLOPs {flops:.4g}; steps {['%.3f' % t for t in ts]}")
        print(f"{label}_step_s {median:.4f}")
        print(f"{label}_flops_per_s {per_s[label]:.4g}")
    for label in steps:
        if label != "peft_lora":
            print(f"ratio_{label}_over_peft {per_s[label] / per_s['peft_lora']:.3f}")


if __name__ == "__main__":
    main()
