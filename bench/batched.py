"""Wall time of a round of K devices' local updates: batched (`executor.batch_devices: K`) vs one by one.

phones_mixed-like rounds: every device of the round trains `--local-steps` 4 expert steps of
2 × 64 tokens (lr 3e-3); CoMiGS-1GXS with τ 4 and one router step (a router phase every round),
HetLoRA with rank 8 × E clipped to [8, 32]; devices' budgets cycle through phones_mixed's tiers
(flagship, mid, mid, low, ...), so one batch mixes E = 2..4 experts and ranks 16..32. Per K and
method, the same rounds run both ways on one model (alternating, so background load hits both
alike) after one warm-up round each; a round = download, K local updates, aggregate. Tokens are
random ids (the timing does not depend on the text).

The model: `--model smollm2-135m` (the offline GGUF) or, where it cannot load, its architecture
built from its config with random weights (`smollm2-135m-random`: the same shapes and FLOPs),
said in the output; `--model tiny-llama` is a smoke test. One figure a line:

    <method>_k<K>_sequential_s_per_round 1.234
    <method>_k<K>_batched_s_per_round 0.456
    <method>_k<K>_speedup 2.71

    python bench/batched.py [--device cpu|cuda] [--k 4 8 16] [--rounds 2] [--methods comigs-1gxs hetlora]

The process keeps its freed heap as simfed's runs do (simfed/run/host_memory.py); `--trimming-heap`
measures glibc's default, under which every batched step faulted its activations in again.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np
import torch

from simfed.data.federated import UserData
from simfed.learn.adapters import AdaptedModel
from simfed.learn.base_model import load_base_model
from simfed.learn.device import autocast_dtype
from simfed.learn.methods.base import Budget, ClientInfo, LocalPlan, update_in_batches
from simfed.learn.methods.registry import build_method
from simfed.learn.model_card import load_card
from simfed.learn.spec import TrainingSpec, method_spec
from simfed.run.host_memory import keep_freed_memory

# phones_mixed's tiers as budgets (memory bytes, FLOP/s): flagship, mid, mid, low
TIERS = [Budget(12e9, 150e9), Budget(6e9, 45e9), Budget(6e9, 45e9), Budget(3e9, 10e9)]
METHODS = {
    "comigs-1gxs": dict(kind="comigs", variant="1gxs", max_experts=4, tau=4, router_steps=1),
    "hetlora": dict(kind="hetlora", max_experts=4, match="full", min_rank=8, max_rank=32),
}


def load_model(name: str, device: str, precision: str) -> tuple[AdaptedModel, str]:
    """The card's model on `device`; SmolLM2 from its config (random weights) if the GGUF is missing."""
    try:
        base = load_base_model(load_card(name), device)
    except Exception as err:  # noqa: BLE001 - any load failure: fall back, and say why
        if name != "smollm2-135m":
            raise
        print(f"# {name} unavailable ({type(err).__name__}: {str(err).splitlines()[0][:120]}); "
              "using smollm2-135m-random: SmolLM2's architecture, random weights, same shapes and FLOPs")
        name = "smollm2-135m-random"
        base = load_base_model(load_card(name), device)
    dev = torch.device(device)
    return AdaptedModel(base, autocast_dtype(precision, dev)), name


def fleet(k: int, vocab: int, tokens: int) -> list[ClientInfo]:
    rng = np.random.default_rng(0)
    out = []
    for c in range(k):
        split = lambda n: rng.integers(0, vocab, size=n).astype(np.int32)  # noqa: E731
        data = UserData(f"u{c}", "random", split(tokens), split(tokens // 4), split(tokens // 4))
        out.append(ClientInfo(c, TIERS[c % len(TIERS)], data))
    return out


def sync(model: AdaptedModel) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize()


def round_fn(model: AdaptedModel, method_name: str, training: TrainingSpec, clients: list[ClientInfo],
             batch: int, total_rounds: int):
    method = build_method(method_spec(name=method_name, **METHODS[method_name]), training, model)
    method.setup(clients, seed=0)
    state = {"round": 0}

    def one_round() -> float:
        r = state["round"]
        start = time.perf_counter()
        jobs = [(c.client_id, method.download(c.client_id), LocalPlan(r, total_rounds, seed=0)) for c in clients]
        updates = update_in_batches(method, jobs, batch)
        method.aggregate(updates, r)
        sync(model)
        state["round"] = r + 1
        return time.perf_counter() - start

    return one_round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="auto: bf16 autocast on a CUDA GPU that has it, fp32 elsewhere")
    parser.add_argument("--k", type=int, nargs="+", default=[4, 8, 16], help="devices a round")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds (after one warm-up)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--local-steps", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trimming-heap", action="store_true",
                        help="leave glibc's heap trimming on, as simfed did before simfed/run/host_memory.py")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    malloc = "left as it is (--trimming-heap)" if args.trimming_heap else keep_freed_memory()

    model, name = load_model(args.model, args.device, args.precision)
    vocab = int(model.model.config.vocab_size)
    training = TrainingSpec(local_steps=args.local_steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=3e-3)
    total = args.rounds + 1
    print(f"# {name} on {args.device} (autocast {model.autocast}), {args.threads} threads, {args.local_steps} steps "
          f"of {args.batch_size} x {args.seq_len} a device-round; median of {args.rounds} rounds after 1 warm-up; malloc {malloc}")
    for method_name in args.methods:
        for k in args.k:
            clients = fleet(k, vocab, 20 * args.seq_len * args.batch_size * args.local_steps)
            runs = {"sequential": round_fn(model, method_name, training, clients, 1, total),
                    "batched": round_fn(model, method_name, training, clients, k, total)}
            for fn in runs.values():
                fn()  # warm-up round (allocator, kernels)
            times: dict[str, list[float]] = {label: [] for label in runs}
            faults: dict[str, list[int]] = {label: [] for label in runs}  # minor page faults a round
            system: dict[str, list[float]] = {label: [] for label in runs}  # kernel CPU seconds a round
            for _ in range(args.rounds):
                for label, fn in runs.items():
                    before = resource.getrusage(resource.RUSAGE_SELF)
                    times[label].append(fn())
                    after = resource.getrusage(resource.RUSAGE_SELF)
                    faults[label].append(after.ru_minflt - before.ru_minflt)
                    system[label].append(round(after.ru_stime - before.ru_stime, 2))
            medians = {label: statistics.median(ts) for label, ts in times.items()}
            for label, ts in times.items():
                print(f"# {method_name} K={k} {label}: rounds {['%.3f' % t for t in ts]}, page faults {faults[label]}, system s {system[label]}")
                print(f"{method_name}_k{k}_{label}_s_per_round {medians[label]:.4f}")
            print(f"{method_name}_k{k}_speedup {medians['sequential'] / medians['batched']:.3f}", flush=True)


if __name__ == "__main__":
    main()
