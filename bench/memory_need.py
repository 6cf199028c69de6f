"""What a training step really holds in memory, against `simfed.learn.memory`'s estimate.

`world.memory_policy: exclude | shrink` decides from `memory_need` (simfed/learn/memory.py, from
shapes alone) which devices can train at all, so its activation term is a fidelity question: this
script measures it on simfed's own training code (bench/local_step.py's step: `AdaptedModel`,
AdamW, CoMiGS with E MLP experts of rank 8 under a top-2 router + the rank-8 attention LoRA;
E = 1 is a plain LoRA), per model, expert count and batch shape, in two ways:

- `kept`: the bytes autograd keeps for the backward pass, counted exactly by walking the graph
  of one forward (`simfed.learn.saved_tensors.saved_storages`: every grad_fn's `_saved_*`
  tensors, each storage once, the model's and adapters' own weights left out), plus the two
  vocab-wide gradients the backward makes first: what the estimate's activation term counts.
- `peak`: the step's high-water mark above the memory in use before it (the adapters, their
  AdamW moments and the model already allocated, so it is activations + gradients + the
  backward's transients): on a CPU the process's peak RSS (Linux: `/proc/self/status` VmHWM,
  reset through `/proc/self/clear_refs`; freed memory is first handed back with `malloc_trim`);
  on CUDA `torch.cuda.max_memory_allocated`.

One line per case, one figure a field:

    <model> E<e> <b>x<t> kept_gb 1.12 peak_gb 1.20 estimate_gb 1.12 kept_over_estimate 1.00 peak_over_estimate 1.07

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
from simfed.learn.saved_tensors import saved_storages, weight_storages


def saved_bytes(model: AdaptedModel, adapters, ids: torch.Tensor) -> int:
    """Bytes of the tensors one forward saves for backward (weights excluded), each storage once."""
    with model.using(adapters):
        loss = next_token_loss(model, ids)
    return sum(saved_storages(loss, weight_storages(model.model, adapters)).values())


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
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"],
                        help="bfloat16: the step under bf16 autocast, the estimate with 2-byte activations")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    meter = PeakMeter(device)
    print(f"# {args.device}, {args.precision}, memory above what the model and adapters hold before the step")
    for requested in args.models:
        model, name = load_model(requested, args.device, args.precision)
        dims = ModelDims.of(model)
        vocab = int(model.model.config.vocab_size)
        for spec in args.shapes:
            batch, seq_len = (int(v) for v in spec.split("x"))
            ids = torch.as_tensor(np.random.default_rng(0).integers(0, vocab, size=(batch, seq_len + 1)),
                                  dtype=torch.long, device=device)
            for n_experts in args.experts:
                step, shape = comigs_step_fn(model, ids, n_experts, "auto")
                step()  # AdamW moments exist from here on, as on a device mid-round (gradients are
                # freed by each step's zero_grad, so the measured peak allocates them again)
                peak = meter.measure(step)
                adapters = model.new_adapters(shape, torch.Generator().manual_seed(0))
                for p in adapters.router_parameters():
                    p.requires_grad_(False)  # an expert step, as comigs_step_fn's
                # what the estimate counts: the kept tensors, and the two vocab-wide gradients
                # (log-probabilities', logits') the backward makes first, fp32
                kept = saved_bytes(model, adapters, ids) + 2 * vocab * batch * seq_len * 4
                activation_bytes = 2 if args.precision == "bfloat16" else 4
                estimate = memory_need(dims, shape, batch, seq_len, activation_bytes=activation_bytes).activations
                print(f"{name} E{n_experts} {spec} kept_gb {kept / 1e9:.3f} peak_gb {peak / 1e9:.3f} "
                      f"estimate_gb {estimate / 1e9:.3f} kept_over_estimate {kept / estimate:.2f} "
                      f"peak_over_estimate {peak / estimate:.2f}", flush=True)
                del step, adapters
        del model
        gc.collect()


if __name__ == "__main__":
    main()
