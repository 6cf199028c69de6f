"""Routing analysis (opt-in, `training.save_routing`): what each device's routers do on its test data.

At every evaluation the runner calls `routing_record` for every device of a method whose devices
hold routers (CoMiGS, the joint-router MoE baselines). The device's current local model — the one
the evaluation measures — runs once more over the same deterministic test windows with
`ExpertBank.keep_weights` on, and per layer we keep:

- `expert_mean[l][e]`: the mean routing weight of expert e over all predicted tokens
  (top-k softmax weights, 0 for unselected experts; each token's weights sum to 1);
- `generalist[l]` = expert_mean[l][0] (expert 0 is the generalist — under the 2G variant both
  experts are shared and "generalist" is just expert 0), `specialists[l]` = 1 − generalist[l],
  the weight all specialists together get;
- `top1_share[l][e]`: the fraction of tokens whose top-1 expert is e;
- for the first test window only: its input token ids, their decoded text pieces and the top-1
  expert of every token in every layer (`sample`), for the token-level colouring (paper Fig. 5).

One JSON line per (method, seed, round, device) goes to RUN_DIR/routing.jsonl; `analysis/routing.py`
draws the paper's Figures 4 and 5 from it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simfed.learn.lora import ExpertBank

ROUTING_FILE = "routing.jsonl"


def _decode_piece(tokenizer: Any, token: int) -> str:
    for tok in (tokenizer, getattr(tokenizer, "tokenizer", None)):
        if tok is not None and hasattr(tok, "decode"):
            try:
                return str(tok.decode([int(token)]))
            except Exception:  # a tokenizer that cannot decode one id alone
                continue
    return f"<{int(token)}>"


@torch.no_grad()
def routing_record(method: Any, client: int, split: str = "test") -> dict[str, Any] | None:
    """Per-layer routing statistics of `client`'s local model on its `split` windows; None when
    the method has no routers (not an `AdapterMethod`, or every bank has one expert)."""
    from simfed.learn.methods.adapter_method import AdapterMethod

    if not isinstance(method, AdapterMethod):
        return None
    fed = method.fed
    adapters = fed.local_adapters(client)
    banks: list[ExpertBank] = adapters.banks()
    if not any(b.router is not None for b in banks):
        return None
    windows = fed.windows(client, split)
    model = fed.model
    per_layer: list[list[torch.Tensor]] = [[] for _ in banks]
    for bank in banks:
        bank.keep_weights, bank.last_weights = True, None
    try:
        with model.using(adapters):
            for start in range(0, len(windows), fed.eval_batch):
                chunk = torch.as_tensor(np.asarray(windows[start : start + fed.eval_batch], dtype=np.int64), device=model.device)
                model.logits(chunk[:, :-1])
                for layer, bank in enumerate(banks):
                    if bank.last_weights is not None:
                        per_layer[layer].append(bank.last_weights.float().cpu())
                    bank.last_weights = None
    finally:
        for bank in banks:
            bank.keep_weights, bank.last_weights = False, None
    expert_mean, top1_share, sample_top1 = [], [], []
    for layer, bank in enumerate(banks):
        if not per_layer[layer]:  # no router in this layer (E = 1): all weight on expert 0
            expert_mean.append([1.0])
            top1_share.append([1.0])
            sample_top1.append([0] * (windows.shape[1] - 1))
            continue
        w = torch.cat(per_layer[layer], dim=0)  # (windows, T, E)
        flat = w.reshape(-1, w.shape[-1]).double()
        expert_mean.append(flat.mean(0).tolist())
        top1 = w.argmax(-1)  # (windows, T)
        top1_share.append(torch.bincount(top1.reshape(-1), minlength=w.shape[-1]).double().div(top1.numel()).tolist())
        sample_top1.append(top1[0].tolist())
    generalist = [m[0] for m in expert_mean]
    tokens = [int(t) for t in windows[0, :-1]]
    tokenizer = getattr(getattr(model, "base", None), "tokenizer", None)
    return {
        "device": int(client),
        "n_experts": [len(m) for m in expert_mean],
        "generalist": generalist,
        "specialists": [1.0 - g for g in generalist],
        "expert_mean": expert_mean,
        "top1_share": top1_share,
        "n_tokens": int(windows.shape[0] * (windows.shape[1] - 1)),
        "sample": {
            "tokens": tokens,
            "pieces": [_decode_piece(tokenizer, t) for t in tokens],
            "top1": sample_top1,  # [layer][position]
        },
    }


def record_routing(path: Path, method: Any, seed: int, round_done: int, n_clients: int) -> int:
    """Append one line per device of `method` to `path` (routing.jsonl); returns lines written."""
    lines = []
    for client in range(n_clients):
        record = routing_record(method, client)
        if record is not None:
            lines.append(json.dumps({"method": method.name, "seed": seed, "round": round_done, **record}))
    if lines:
        with open(path, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return len(lines)


def read_routing(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / ROUTING_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
