"""Memory a device needs to fine-tune: frozen base + adapters (with gradients and AdamW moments) + activations.

From the shapes alone (`ModelDims`, `AdapterShape`), in bytes: `b` bytes per frozen weight (the
model card's dtype: float32 = 4, bfloat16/float16 = 2), `a` bytes per activation element (the
compute dtype: 2 under bf16 autocast, else b); adapters, their gradients and AdamW moments are
always float32 (simfed trains them in fp32 under any autocast). Names: L layers, d = d_model, V = vocab, E experts, r_a / r_m the
attention / expert LoRA ranks, B × T the batch, d_ff the MLP width (mlp_down's input).

    base        = b · (L · (Σ_attn in·out + Σ_mlp in·out) + V · d)
                  (frozen matmul weights and one token embedding, the LM head taken as tied to it;
                   biases, norms and position embeddings are left out: < 1% for these models)
    trainable P = L · (r_a · Σ_attn (in+out) + E · r_m · Σ_mlp (in+out) + [router] · E · d)
                  (LoRA A and B of every site and expert, plus the router)
    adapters    = 4 · 4 · P   (fp32 weights, gradients, AdamW first and second moments)
    activations ≈ B · T · (a · L · (8·d + (h + 1 + 2·[gated]) · k · d_ff) + 4 · 3 · V)
                  (what autograd keeps for the backward, per token and layer: ~8 d-wide tensors —
                   norms, q/k/v, attention output, the LoRA inputs — and, once per selected expert,
                   k = min(2, E) (`flops.active_experts`: unselected experts never run), the tensors
                   the activation keeps (h = `ModelDims.mlp_act_kept`, counted on the model's own
                   activation by `saved_tensors.kept_per_element`: 1 for silu, 4 for GPT-2's
                   tanh-GELU), the hidden h_e the output-side LoRA reads, and, gated, the product's
                   two factors; at the head the log-probabilities the loss keeps, and at the start
                   of the backward their gradient and the logits' gradient, all three fp32 under
                   any autocast (the loss upcasts the logits). Attention scores (the fused kernels
                   keep none), the allocator's slack and the framework's own footprint are not
                   counted.)

Measured against simfed's own eager training (bench/memory_need.py: fp32, AMD EPYC CPU, batches
4 × 64, 4 × 128 and 8 × 128, a CoMiGS expert step with E = 1, 2 and 4): what autograd keeps plus
the two vocab-wide gradients is 0.96–0.97× this term for SmolLM2-135M at E ≤ 2 and 1.00× for
GPT-2 124M; at E = 4 1.14× for both: the host's grouped path also keeps the weighted hidden
w_e·h_e that its down LoRA reads (one more d_ff-wide tensor an expert), which a kernel applying
w_e at rank r need not keep, so it is left out. The process's peak RSS is
1.22–1.32× (SmolLM2) and 1.41–1.72× (GPT-2) at E ≤ 2: the allocator's slack, freed temporaries
between kept tensors, most where the written-out GELU makes many. (The formula before this one
counted 3 d_ff-wide tensors for a gated MLP and 2 for GPT-2's, and 2·V at the head: 0.39–0.64×
of the peak.) All of this is fp32. Under bf16 autocast (a = 2) the term is low: autocast keeps
fp32 norm products and a bf16 copy of each frozen weight for its backward (about 0.27 GB for
SmolLM2, whatever the batch), which this does not count; measured for SmolLM2 at 4 × 128
(`bench/memory_need.py --precision bfloat16`), kept 1.54× (E = 1) and 1.42× (E = 2) the term,
peak 1.96× and 1.75×. (Measured before simfed made those bf16 copies once per run,
simfed/learn/frozen_casts.py — they now live with the model, not the step, and the bench still
counts them as kept, since its weight set is the fp32 one — and before a CPU ran attention in
fp32 under bf16, simfed/learn/cpu_attention.py, which keeps q, k, v and the output in fp32, 2
bytes more an element.)

`memory_need` is their sum; a device fits if it is at most the device's RAM. The engine asks the
workload for it when `world.memory_policy` is not `ignore` (see simfed/sim/engine.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from simfed.learn.adapters import AdapterShape
from simfed.learn.flops import ModelDims, active_experts, lora_numel


@dataclass(frozen=True)
class MemoryNeed:
    base: int  # frozen weights, bytes
    adapters: int  # LoRA + router weights, gradients and AdamW moments, bytes
    activations: int  # kept for backward over one batch, bytes

    @property
    def total(self) -> int:
        return self.base + self.adapters + self.activations


SHRINK_STEPS = 16  # memory_policy shrink: halvings of a device's memory figure before it gives up (then: excluded)


def shrink_search(memory: Sequence[float], capacity: Sequence[int],
                  needs: Callable[[list[float]], Sequence[int | None]]) -> list[float]:
    """memory_policy shrink: the memory figure each device is sized as. `needs(figures)` is each
    device's training need when sized by `figures` (None: fits); a device whose need exceeds its
    `capacity` is sized as if it had half the memory, again, until it fits or SHRINK_STEPS halvings
    are done (the engine then excludes it). The real run (one method set up for all devices) and
    dry mode (one device's shape at a time) both search with this."""
    figures = list(memory)
    for _ in range(SHRINK_STEPS):
        too_big = [n is not None and n > c for n, c in zip(needs(figures), capacity)]
        if not any(too_big):
            break
        figures = [m / 2 if big else m for m, big in zip(figures, too_big)]
    return figures


def base_params(dims: ModelDims) -> int:
    per_layer = sum(i * o for i, o in dims.attn_linears) + sum(i * o for i, o in dims.mlp_up)
    per_layer += dims.mlp_down[0] * dims.mlp_down[1]
    return dims.n_layers * per_layer + dims.vocab * dims.d_model


def trainable_params(dims: ModelDims, shape: AdapterShape) -> int:
    attn, expert = lora_numel(dims, shape)
    router = dims.n_layers * shape.n_experts * dims.d_model if shape.has_router else 0
    return attn + shape.n_experts * expert + router


DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
HEAD_BYTES = 4  # the log-probabilities and the two vocab-wide gradients are fp32: logits go .float() first


def memory_need(dims: ModelDims, shape: AdapterShape, batch_size: int, seq_len: int,
                weight_bytes: int = 4, activation_bytes: int | None = None) -> MemoryNeed:
    """Bytes to train `shape` on `dims` with batch_size × seq_len tokens (formula in the module doc);
    `weight_bytes` per frozen weight (the card's dtype), `activation_bytes` per activation (default:
    the same)."""
    b = weight_bytes
    a = weight_bytes if activation_bytes is None else activation_bytes
    d_ff = dims.mlp_down[0]
    gated = len(dims.mlp_up) > 1
    hidden = dims.mlp_act_kept + 1 + (2 if gated else 0)  # the activation's, h_e, act(gate) and up
    per_token_layers = dims.n_layers * (8 * dims.d_model + hidden * active_experts(shape) * d_ff)
    head = 3 * dims.vocab * HEAD_BYTES  # the loss runs in fp32 under any autocast (`next_token_loss`)
    return MemoryNeed(
        base=b * base_params(dims),
        adapters=4 * 4 * trainable_params(dims, shape),
        activations=batch_size * seq_len * (a * per_token_layers + head),
    )
