"""What a training step really holds in memory, against `simfed.learn.memory`'s estimate.

`world.memory_policy: exclude | shrink` decides from `memory_need` (simfed/learn/memory.py, from
shapes alone) which devices can train at all, so its activation term is a fidelity question: this
script measures it on simfed's own training code (bench/local_step.py's step: `AdaptedModel`,
AdamW, CoMiGS with E MLP experts of rank 8 under a top-2 router + the rank-8 attention LoRA;
E = 1 is a plain LoRA), per model, expert count and batch shape, in two ways:

- `saved`: the bytes autograd keeps for the backward pass, counted exactly by walking the
  graph of one forward (every grad_fn's `_saved_*` tensors, each storage once, the model's and
  adapters' own weights left out): what the estimate's "activations kept for backward" means.
- `peak`: the step's high-water mark above the memory in use before it (the adapters, their
  AdamW moments and the model already allocated, so it is activations + gradients + the
  backward's transients): on a CPU the process's peak RSS (Linux: `/proc/self/status` VmHWM,
  reset through `/proc/self/clear_refs`; freed memory is first handed back with `malloc_trim`);
  on CUDA `torch.cuda.max_memory_allocated`.

One line per case, one figure a field:

    <model> E<e> <b>x<t> saved_gb 1.26 peak_gb 1.23 estimate_gb 0.77 saved_over_estimate 1.64 peak_over_estimate 1.60

    python bench/memory_need.py [--models smollm2-135m gpt2-124m-random] [--experts 1 2 4]
        [--shapes 4x64 4x128 8x128] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import ctypes
import gc

import numpy as np
import torch

from batched import load_model
from local_step import comigs_step_fn
from simfed.learn.adapters import AdaptedModel
from simfed.learn.flops import ModelDims
from simfed.learn.local_update import next_token_loss
from simfed.learn.memory import memory_need


def saved_bytes(model: AdaptedModel, adapters, ids: torch.Tensor) -> int:
    """Bytes of the tensors one forward saves for backward (weights excluded), each storage once."""
    weights = {p.untyped_storage().data_ptr()
               for p in [*model.model.parameters(), *model.model.buffers(), *adapters.parameters()]}
    with model.using(adapters):
        loss = next_token_loss(model, ids)
    storages: dict[int, int] = {}
    seen, stack = set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for attr in dir(node):
            if not attr.startswith("_saved_"):
                continue
            try:
                value = getattr(node, attr)
            except RuntimeError:  # freed, or not a tensor this node kept
                continue
            if isinstance(value, torch.Tensor):
                key = value.untyped_storage().data_ptr()
                if key not in weights:
                    storages[key] = value.untyped_storage().nbytes()
        stack.extend(next_node for next_node, _ in node.next_functions)
    return sum(storages.values())


class PeakMeter:
    """The high-water mark of memory in use during a call, above what was in use before it."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.libc = ctypes.CDLL("libc.so.6") if device.type == "cpu" else None

    @staticmethod
    def _status(key: str) -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))

    def measure(self, fn) -> int:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - before
        self.libc.malloc_trim(0)  # freed memory back to the OS, so that RSS is memory in use
        before = self._status("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
        fn()
        return self._status("VmHWM") - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gpt2-124m-random"])
    parser.add_argument("--experts", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--shapes", nargs="+", default=["4x64", "4x128", "8x128"], help="batch x seq_len")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    meter = PeakMeter(device)
    print(f"# {args.device}, fp32, memory above what the model and adapters hold before the step")
    for requested in args.models:
        model, name = load_model(requested, args.device, "float32")
        dims = ModelDims.of(model)
        vocab = int(model.model.config.vocab_size)
        for spec in args.shapes:
            batch, seq_len = (int(v) for v in spec.split("x"))
            ids = torch.as_tensor(np.random.default_rng(0).integers(0, vocab, size=(batch, seq_len + 1)),
                                  dtype=torch.long, device=device)
            for n_experts in args.experts:
                step, shape = comigs_step_fn(model, ids, n_experts, "auto")
                step()  # gradients and AdamW moments exist from here on, as on a device mid-round
                peak = meter.measure(step)
                adapters = model.new_adapters(shape, torch.Generator().manual_seed(0))
                for p in adapters.router_parameters():
                    p.requires_grad_(False)  # an expert step, as comigs_step_fn's
                saved = saved_bytes(model, adapters, ids)
                estimate = memory_need(dims, shape, batch, seq_len).activations
                print(f"{name} E{n_experts} {spec} saved_gb {saved / 1e9:.3f} peak_gb {peak / 1e9:.3f} "
                      f"estimate_gb {estimate / 1e9:.3f} saved_over_estimate {saved / estimate:.2f} "
                      f"peak_over_estimate {peak / estimate:.2f}", flush=True)
                del step, adapters
        del model
        gc.collect()


if __name__ == "__main__":
    main()
