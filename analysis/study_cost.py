"""How long a study takes: its FLOPs and activation bytes from the cost model, at a given throughput.

    .venv/bin/python analysis/study_cost.py SCENARIO.yaml [...] [--flops-per-s 179.3e9 --bytes-per-s 13.5e9]

An estimate before running, from the same cost model that times the simulated devices
(simfed/learn/flops.py), summed over seeds, methods and devices of an ideal-world study (every
device trains every round):
- expert steps: rounds × local_steps per device, each `step_flops` + `step_activation_bytes`
  of the device's shape (CoMiGS: E from the budget is not known without the fleet's draw, so
  every device is taken as 1G1S, E = 2 — top-2 compute makes E = 4 cost the same but its router);
- router phases (CoMiGS kinds only): ⌊rounds·local_steps / tau⌋ × router_steps router steps;
  joint-router MoEs train their routers inside the expert steps;
- Centralized: one model on the pooled batch (the devices' tokens together);
- PCL: every collaboration round (r > 3, r even, the reference schedule) evaluates each device's
  model on every device's validation split;
- evaluation: forward passes over each device's test windows (`eval_windows`; "all" = the split)
  at round 0 and every `eval_every` rounds, per method (round 0 once per seed).
Seconds = FLOPs / flops-per-s + activation bytes / bytes-per-s (the calibrated two-term model;
bytes-per-s 0 = folded into flops-per-s). Defaults: this project's 2-core CPU as calibrated in
README.md (179.3 GFLOP/s, 13.5 GB/s, SmolLM2-135M at batch 4 × 64, within 2 % on held-out shapes).
Per-step overheads the model does not see (Python, the optimizer, data batches) make small steps
slower than this; read the result as a lower bound there.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from simfed.config import load_scenario  # noqa: E402
from simfed.learn.adapters import AdapterShape  # noqa: E402
from simfed.learn.flops import ModelDims, forward_flops, step_activation_bytes, step_flops  # noqa: E402

# GPT-2 124M (Radford et al. 2019; transformers' GPT2Config defaults): the card needs the hub to
# load, so its shapes are written out here
GPT2_DIMS = ModelDims(n_layers=12, d_model=768, d_attn=768, vocab=50257,
                      attn_linears=((768, 2304), (768, 768)), mlp_up=((768, 3072),), mlp_down=(3072, 768),
                      mlp_act_kept=4)  # HF's tanh-GELU (gelu_new) keeps 4 (simfed.learn.saved_tensors)
ROUTER_PHASE_KINDS = ("comigs",)
NO_TRAINING = ("pretrained",)
MIXTURE_KINDS = ("comigs", "local_moe", "fedavg_moe", "pfedmoe")


@dataclass
class Cost:
    flops: float = 0.0
    act_bytes: float = 0.0

    def add(self, flops: float, act_bytes: float = 0.0, times: float = 1.0) -> None:
        self.flops += flops * times
        self.act_bytes += act_bytes * times

    def seconds(self, flops_per_s: float, bytes_per_s: float) -> float:
        return self.flops / flops_per_s + (self.act_bytes / bytes_per_s if bytes_per_s > 0 else 0.0)


def dims_of(model: str) -> ModelDims:
    if model == "gpt2":
        return GPT2_DIMS
    from simfed.learn.model_card import load_card
    from simfed.run.dry import model_dims

    return model_dims(load_card(model))


def eval_tokens(test_tokens: int, seq_len: int, windows) -> int:
    """Tokens one evaluation of one device forwards (seq_len per window)."""
    n_fit = max(1, (test_tokens - 1) // seq_len)
    return seq_len * (n_fit if windows == "all" else min(int(windows), n_fit))


def study_cost(path: Path, dims: ModelDims | None = None) -> tuple[Cost, dict[str, Cost]]:
    """(total over the seeds, per method for one seed) cost of the study; `dims`: the model's
    shapes where the caller has them (else read from the scenario's model card)."""
    s = load_scenario(path)
    t, rounds = s.training, s.world.server.rounds
    dims = dims or dims_of(s.model)
    n = s.world.n_devices
    users = [s.data.users[i % len(s.data.users)] for i in range(n)]
    test = [u.size("test") for u in users]
    val = [u.size("val") for u in users]
    steps = rounds * t.local_steps
    evals = rounds // t.eval_every + (0 if rounds % t.eval_every == 0 else 1)  # and the last round
    b, q = t.batch_size, t.seq_len
    per_method: dict[str, Cost] = {}
    pretrained = Cost()
    for tokens in test:  # round 0, once per seed: the bare base model
        pretrained.add(forward_flops(dims, AdapterShape(1, 8, 0), 1, q) / q, times=eval_tokens(tokens, q, t.eval_windows))
    for m in s.methods:
        cost = Cost()
        if m.kind not in NO_TRAINING:  # Pretrained has no adapters (and no rank): round 0 only, above
            shape = AdapterShape(2 if m.kind in MIXTURE_KINDS else 1, m.rank, m.rank)
            expert = (step_flops(dims, shape, b, q, "experts"), step_activation_bytes(dims, shape, b, q))
            cost.add(*expert, times=steps * n)  # Centralized: one model, the pooled batch: the same tokens
            if m.kind in ROUTER_PHASE_KINDS:
                router = (step_flops(dims, shape, b, q, "router"), step_activation_bytes(dims, shape, b, q))
                cost.add(*router, times=(steps // m.tau) * m.router_steps * n)
            fwd_token = forward_flops(dims, shape, 1, q) / q
            for tokens in test:
                cost.add(fwd_token, times=evals * eval_tokens(tokens, q, t.eval_windows))
            if m.kind == "pcl":
                collaborations = sum(1 for r in range(1, rounds + 1) if r > 3 and r % 2 == 0)
                per_collab = n * sum(eval_tokens(v, q, t.eval_windows) for v in val)
                cost.add(fwd_token, times=collaborations * per_collab)
        per_method[m.name] = cost
    total = Cost()
    seeds = len(s.seeds)
    for c in [pretrained, *per_method.values()]:
        total.add(c.flops, c.act_bytes, times=seeds)
    return total, per_method


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="+", type=Path)
    parser.add_argument("--flops-per-s", type=float, default=179.3e9)
    parser.add_argument("--bytes-per-s", type=float, default=13.5e9)
    args = parser.parse_args(argv)
    grand = 0.0
    for path in args.scenarios:
        total, per_method = study_cost(path)
        secs = total.seconds(args.flops_per_s, args.bytes_per_s)
        grand += secs
        print(f"{path}: {total.flops / 1e15:.3f} PFLOP, {total.act_bytes / 1e12:.3f} TB activations → "
              f"{secs / 60:.1f} min ({secs / 3600:.2f} h)")
        for name, c in per_method.items():
            print(f"    {name:16s} {c.seconds(args.flops_per_s, args.bytes_per_s):9.1f} s a seed")
    if len(args.scenarios) > 1:
        print(f"all: {grand / 60:.1f} min ({grand / 3600:.2f} h)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
