"""Wall-clock of one local training step on SmolLM2-135M: CoMiGS 1G1S vs a plain peft LoRA.

Same tokens (batch 4 × 128, fixed seed), same AdamW (β 0.9/0.95, wd 0.01, lr 2e-3), two threads.
CoMiGS-1G1S: 2 MLP experts of rank 8 (top-2 router) + rank-8 attention LoRA, attached through
`AdaptedModel`, loss = CE + 0.01·LB. peft: LoraConfig(r=8, alpha 16, rsLoRA) on q,k,v,o,gate,up,down
of a fresh copy of the base model. FLOPs of each step from `simfed.learn.flops.step_flops` (peft's
is the E = 1 shape), so FLOP/s = FLOPs / median step seconds. Steps of the two alternate, so a
busy machine slows both alike.

    .venv/bin/python bench/local_step.py [--steps 5] [--warmup 2]
"""
from __future__ import annotations

import argparse
import statistics
import time

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


def comigs_step_fn(card, ids: torch.Tensor):
    model = AdaptedModel(load_base_model(card))
    shape = AdapterShape(n_experts=2, mlp_rank=RANK, attn_rank=RANK)
    adapters = model.new_adapters(shape, torch.Generator().manual_seed(0))
    params = adapters.expert_parameters()
    for p in adapters.router_parameters():
        p.requires_grad_(False)  # an expert step: routers frozen, as in train_locally
    opt = torch.optim.AdamW(params, lr=LR, betas=ADAM_BETAS, weight_decay=WD)
    model.attach(adapters)
    model.model.train()

    def step() -> float:
        loss = next_token_loss(model, ids)
        total = loss + LB_LAMBDA * adapters.load_balancing_loss()
        total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step, ModelDims.of(model), shape


def peft_step_fn(card, ids: torch.Tensor):
    from peft import LoraConfig, get_peft_model

    base = load_base_model(card).model  # a fresh copy, never touched by AdaptedModel
    config = LoraConfig(r=RANK, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, use_rslora=True, bias="none")
    model = get_peft_model(base, config)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR, betas=ADAM_BETAS, weight_decay=WD)
    model.train()

    def step() -> float:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    card = load_card("smollm2-135m")
    rng = np.random.default_rng(0)
    vocab = 49152
    ids = torch.as_tensor(rng.integers(0, vocab, size=(BATCH, SEQ_LEN + 1)), dtype=torch.long)

    comigs, dims, shape = comigs_step_fn(card, ids)
    peft, peft_params = peft_step_fn(card, ids)
    for _ in range(args.warmup):
        comigs()
        peft()
    t_comigs, t_peft = [], []
    for _ in range(args.steps):  # alternate, so that background load hits both alike
        t_comigs.append(timed(comigs))
        t_peft.append(timed(peft))
    s_comigs, s_peft = statistics.median(t_comigs), statistics.median(t_peft)
    f_comigs = step_flops(dims, shape, BATCH, SEQ_LEN, "experts")
    f_peft = step_flops(dims, AdapterShape(1, RANK, RANK), BATCH, SEQ_LEN, "experts")
    print(f"# SmolLM2-135M, batch {BATCH} x {SEQ_LEN}, {args.threads} threads, median of {args.steps} "
          f"after {args.warmup} warm-up; peft trainable params {peft_params}")
    print(f"# step FLOPs: comigs {f_comigs:.4g}, peft {f_peft:.4g}; steps comigs {['%.3f' % t for t in t_comigs]}, "
          f"peft {['%.3f' % t for t in t_peft]}")
    print(f"comigs_1g1s_step_s {s_comigs:.4f}")
    print(f"peft_lora_step_s {s_peft:.4f}")
    print(f"comigs_flops_per_s {f_comigs / s_comigs:.4g}")
    print(f"peft_flops_per_s {f_peft / s_peft:.4g}")
    print(f"ratio_comigs_over_peft {(f_comigs / s_comigs) / (f_peft / s_peft):.3f}")


if __name__ == "__main__":
    main()
