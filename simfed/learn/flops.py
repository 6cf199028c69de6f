"""FLOPs of a local step, from the model's shapes, the adapters, top-k and the tokens.

This is the cost model the simulated world turns into seconds (FLOPs / a device's FLOP/s). It
counts what simfed's implementation actually computes (a test checks it against
`torch.utils.flop_counter.FlopCounterMode` on the real model, within 10%):

- forward, per token: 2·in·out for every frozen matmul (attention projections, the MLP's
  input-side linears ONCE and its output-side linear ONCE — see `MixtureMLP` — and the LM head),
  4·T·d_attn per layer for attention scores and their weighted sum (T = sequence length; the
  kernel computes the full square), 2·r·(in+out) per LoRA pair and *selected* expert, the router
  2·d·E (every logit), and the mixing contractions 2·k·(d_ff + d_model) per layer;
- backward with a frozen base: one more matmul per frozen weight (gradient of the input only;
  none for layer 0's attention projections, whose input needs no gradient), two for every
  trainable LoRA matmul (input and weight gradients) and for attention scores;
- an expert step trains LoRA weights; a router step trains only the routers, so its LoRA
  matmuls need no weight gradient.
Top-k: a token runs only the k = min(top_k, E) experts its router selects (`active_experts`), as
the paper's code does and as `MixtureMLP`'s grouped path computes; the router itself scores all E.
With E ≤ k (1G1S, 2G, 2S, E = 1) every expert is selected and nothing changes.
Element-wise work (norms, activations, softmax) is not counted, as FLOP counters do not either.
It is not free, though: it is bound by memory bandwidth, and CoMiGS does it once per expert over
(k, B, T, d_ff). `step_activation_bytes` estimates the bytes it moves, so that a device profile
with an effective activation bandwidth (`simfed calibrate` fits one) adds bytes / bandwidth to
FLOPs / FLOP/s — the two-term roofline sum the simulated world uses for compute time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from simfed.learn.adapters import AdaptedModel, AdapterShape
from simfed.learn.saved_tensors import kept_per_element


@dataclass(frozen=True)
class ModelDims:
    """The shapes the cost model needs, read from an adapted model once."""

    n_layers: int
    d_model: int
    d_attn: int  # query width (heads × head dim)
    vocab: int
    attn_linears: tuple[tuple[int, int], ...]  # (in, out) of each attention projection in a layer
    mlp_up: tuple[tuple[int, int], ...]  # (in, out) of the MLP's input-side linears
    mlp_down: tuple[int, int]
    # d_ff-wide tensors the MLP's activation keeps for backward (`saved_tensors.kept_per_element`):
    # 1 for silu or exact GELU, 4 for GPT-2's tanh-GELU in elementary ops; memory only
    mlp_act_kept: int = 1

    @staticmethod
    def of(model: AdaptedModel) -> "ModelDims":
        cfg = model.model.config
        n_heads = int(cfg.num_attention_heads)
        head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads)
        sites = model.attention_sites[0]
        mlp = model.mlp_sites[0]
        return ModelDims(
            n_layers=len(model.mlp_sites),
            d_model=int(cfg.hidden_size),
            d_attn=n_heads * head_dim,
            vocab=int(cfg.vocab_size),
            attn_linears=tuple((s.d_in, s.d_out) for s in sites.values()),
            mlp_up=tuple(tuple(d) for d in mlp.up_dims),
            mlp_down=tuple(mlp.down_dims),
            mlp_act_kept=kept_per_element(mlp.activation),
        )


def active_experts(shape: AdapterShape) -> int:
    """Experts a token runs: k = min(top_k, E) under a router; every expert without one (E = 1:
    the single LoRA; averaged experts of the parameter-matched baselines: all E)."""
    if not shape.has_router:
        return shape.n_experts
    return max(1, min(shape.n_experts, shape.top_k))


def step_flops(dims: ModelDims, shape: AdapterShape, batch_size: int, seq_len: int, train: str = "experts") -> float:
    """FLOPs of one optimizer step (forward + backward) on batch_size × seq_len tokens.

    `train` is "experts" (LoRA weights get gradients) or "router" (only the routers do).
    """
    tokens = batch_size * seq_len
    e = shape.n_experts  # the router scores all E experts
    k = active_experts(shape)  # the experts each token runs
    lora_bwd = 2.0 if train == "experts" else 1.0
    fwd = bwd = 0.0
    for layer in range(dims.n_layers):
        # Router steps: nothing before layer 0's router is trainable, so autograd skips layer 0's
        # attention entirely. Expert steps: layer 0's projections read the embeddings, which need
        # no gradient, so only their LoRA weights get one.
        skip_attn_bwd = layer == 0 and train == "router"
        attn_frozen = sum(2.0 * i * o for i, o in dims.attn_linears)
        fwd += attn_frozen
        bwd += attn_frozen if layer > 0 else 0.0
        scores = 4.0 * seq_len * dims.d_attn
        fwd += scores
        bwd += 0.0 if skip_attn_bwd else 2.0 * scores
        if shape.attn_rank > 0:
            attn_lora = sum(2.0 * shape.attn_rank * (i + o) for i, o in dims.attn_linears)
            fwd += attn_lora
            bwd += 0.0 if skip_attn_bwd else lora_bwd * attn_lora
        mlp_frozen = sum(2.0 * i * o for i, o in dims.mlp_up) + 2.0 * dims.mlp_down[0] * dims.mlp_down[1]
        fwd += mlp_frozen
        mlp_lora = k * sum(2.0 * shape.mlp_rank * (i + o) for i, o in (*dims.mlp_up, dims.mlp_down))
        fwd += mlp_lora
        if skip_attn_bwd:  # router step, layer 0: only the output side carries gradient
            bwd += 2.0 * dims.mlp_down[0] * dims.mlp_down[1]
            bwd += k * 2.0 * shape.mlp_rank * sum(dims.mlp_down)
        else:
            bwd += mlp_frozen + lora_bwd * mlp_lora
        d_ff = dims.mlp_down[0]
        mixing = 2.0 * k * (d_ff + dims.mlp_down[1])
        fwd += mixing
        bwd += 2.0 * mixing
        if shape.has_router:
            router = 2.0 * dims.d_model * e
            fwd += router
            bwd += 2.0 * router if train == "router" else router
    head = 2.0 * dims.d_model * dims.vocab
    fwd += head
    bwd += head
    return tokens * (fwd + bwd)


def forward_flops(dims: ModelDims, shape: AdapterShape, batch_size: int, seq_len: int) -> float:
    """FLOPs of one forward pass (evaluation)."""
    tokens = batch_size * seq_len
    e, k = shape.n_experts, active_experts(shape)
    per_layer = (
        sum(2.0 * i * o for i, o in dims.attn_linears)
        + 4.0 * seq_len * dims.d_attn
        + (sum(2.0 * shape.attn_rank * (i + o) for i, o in dims.attn_linears) if shape.attn_rank else 0.0)
        + sum(2.0 * i * o for i, o in dims.mlp_up)
        + 2.0 * dims.mlp_down[0] * dims.mlp_down[1]
        + k * sum(2.0 * shape.mlp_rank * (i + o) for i, o in (*dims.mlp_up, dims.mlp_down))
        + 2.0 * k * (dims.mlp_down[0] + dims.mlp_down[1])
        + (2.0 * dims.d_model * e if shape.has_router else 0.0)
    )
    return tokens * (dims.n_layers * per_layer + 2.0 * dims.d_model * dims.vocab)


# Element-wise tensors of one layer per token, forward: residual adds, norms and their outputs
# (≈ 6·d_model) and, per selected MLP expert (k a token, `active_experts`), the gate and up pre-activations, the activation and the
# product (4·d_ff; with E = 1 the frozen MLP does the same once). Backward reads them back and
# writes their gradients (×2 more); every element is written once and read once (×2), fp32.
_ELEMENTWISE_PASSES = 3 * 2
_BYTES_PER_ELEMENT = 4


def step_activation_bytes(dims: ModelDims, shape: AdapterShape, batch_size: int, seq_len: int) -> float:
    """Bytes of element-wise memory traffic in one optimizer step (expert or router step alike)."""
    d_ff = dims.mlp_down[0]
    per_token_layer = 6 * dims.d_model + 4 * active_experts(shape) * d_ff
    return float(batch_size * seq_len * dims.n_layers * per_token_layer * _ELEMENTWISE_PASSES * _BYTES_PER_ELEMENT)


def round_activation_bytes(
    dims: ModelDims, shape: AdapterShape, batch_size: int, seq_len: int, local_steps: int,
    router_phases: int = 0, router_steps: int = 0,
) -> float:
    """`step_activation_bytes` over a local round's expert steps and router phases."""
    steps = local_steps + (router_phases * router_steps if shape.has_router else 0)
    return steps * step_activation_bytes(dims, shape, batch_size, seq_len)


def router_phases_in_round(global_step: int, local_steps: int, tau: int) -> int:
    """How many router phases a device whose step counter is `global_step` runs in its next round."""
    return (global_step + local_steps) // tau - global_step // tau


def round_flops(
    dims: ModelDims,
    shape: AdapterShape,
    batch_size: int,
    seq_len: int,
    local_steps: int,
    router_phases: int = 0,
    router_steps: int = 0,
) -> float:
    """FLOPs of a device's local round: expert steps plus router phases."""
    total = local_steps * step_flops(dims, shape, batch_size, seq_len, "experts")
    if shape.has_router and router_phases:
        total += router_phases * router_steps * step_flops(dims, shape, batch_size, seq_len, "router")
    return total


class RoundRecipe(Protocol):
    """What of a local-round recipe (simfed/learn/local_update.py's `Recipe`) the cost rules read."""

    batch_size: int
    seq_len: int
    local_steps: int
    tau: int  # expert steps between router phases
    router_steps: int


def recipe_round_flops(dims: ModelDims, shape: AdapterShape, recipe: RoundRecipe, global_step: int) -> float:
    """`round_flops` of a device running `recipe` whose step counter is `global_step` (it decides
    how many router phases fall in the round): the rule the real method and dry mode share."""
    r = recipe
    return round_flops(dims, shape, r.batch_size, r.seq_len, r.local_steps, _phases(shape, r, global_step),
                       r.router_steps)


def recipe_round_activation_bytes(dims: ModelDims, shape: AdapterShape, recipe: RoundRecipe, global_step: int) -> float:
    """`round_activation_bytes` of the same round as `recipe_round_flops`."""
    r = recipe
    return round_activation_bytes(dims, shape, r.batch_size, r.seq_len, r.local_steps,
                                  _phases(shape, r, global_step), r.router_steps)


def _phases(shape: AdapterShape, recipe: RoundRecipe, global_step: int) -> int:
    return router_phases_in_round(global_step, recipe.local_steps, recipe.tau) if shape.has_router else 0


def lora_numel(dims: ModelDims, shape: AdapterShape) -> tuple[int, int]:
    """Elements, over all layers, of `shape`'s attention LoRA and of one of its MLP experts' LoRA
    (A and B: rank × (in + out) per linear): what payloads and trainable parameters are made of."""
    attn = dims.n_layers * shape.attn_rank * sum(i + o for i, o in dims.attn_linears)
    expert = dims.n_layers * shape.mlp_rank * sum(i + o for i, o in (*dims.mlp_up, dims.mlp_down))
    return attn, expert
