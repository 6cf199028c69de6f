"""Parameter matching: which adapters each method gives a device, by one rule (the spec's `match`).

The paper (Sec. 4): "to match the trainable parameter count of our method, we use 2 times LoRA
modules within each user". Its scripts run Local, FedAvg, PCL and Centralized with two MLP LoRA
experts whose outputs are averaged (no router: the reference's `is_no_router`), FFA-LoRA at MLP
rank 16, and HetLoRA/FlexLoRA at MLP ranks 8 × E of the CoMiGS device of the same budget
((32,16,16,16) against 1GXS's (4,2,2,2)). Attention LoRA is rank 8 everywhere and never per device.

`match` values (CoMiGS and the joint-router MoE kinds are the reference and ignore it):

    paper   the above (the default)
    full    the same as paper (HetLoRA/FlexLoRA: rank × E; the others: CoMiGS-1G1S's count)
    active  HetLoRA/FlexLoRA: rank × min(E, top-k), the parameters a token activates; the others as paper
    none    one LoRA of `rank` on the MLP (HetLoRA/FlexLoRA: `rank` on every device, no matching)

Both the methods' `setup` and dry mode (simfed/run/dry.py) size devices through `device_shape`,
so the two can never disagree.
"""
from __future__ import annotations

from simfed.learn.adapters import AdapterShape
from simfed.learn.budget import experts_for_budget, rank_for_budget
from simfed.learn.spec import SPEC_OF_KIND, MethodSpec

TOP_K = 2  # CoMiGS routes each token to min(2, E) experts
AVERAGED_EXPERTS = 2  # the paper's "2 times LoRA modules": CoMiGS-1G1S's expert count
SINGLE_LORA_KINDS = ("local", "fedavg", "pcl", "centralized")
RANKED_KINDS = ("hetlora", "flexlora")
MOE_KINDS = ("local_moe", "fedavg_moe", "pfedmoe")


def comigs_experts(spec: MethodSpec, memory_bytes: float, flops_per_s: float) -> int:
    """E of a CoMiGS device: 2 (1G1S, 2G, 2S) or, for 1GXS, the budget rule's count."""
    if spec.variant != "1gxs":
        return 2
    return experts_for_budget(memory_bytes, flops_per_s, spec.max_experts, spec.min_experts)


def ranked_rank(spec: MethodSpec, memory_bytes: float, flops_per_s: float) -> int:
    """HetLoRA/FlexLoRA: the device's MLP rank (attention stays at `attn_rank`)."""
    return rank_for_budget(memory_bytes, flops_per_s, spec.max_experts, spec.rank, spec.match, TOP_K,
                           spec.min_rank, spec.max_rank, spec.min_experts)


def device_shape(spec: MethodSpec, memory_bytes: float, flops_per_s: float) -> AdapterShape:
    """The adapters `spec`'s method gives a device with this budget (the one sizing rule)."""
    kind = spec.kind
    if kind == "pretrained":  # no adapters
        return AdapterShape(0, 0, 0)
    if kind not in SPEC_OF_KIND:  # a plugin kind (examples/my_method): one LoRA of its spec's `rank`
        return AdapterShape(1, spec.rank, spec.rank)
    attn = spec.attn_rank
    if kind == "comigs":
        return AdapterShape(comigs_experts(spec, memory_bytes, flops_per_s), spec.rank, attn)
    if kind in MOE_KINDS:
        return AdapterShape(2, spec.rank, attn)
    if kind in RANKED_KINDS:
        return AdapterShape(1, ranked_rank(spec, memory_bytes, flops_per_s), attn)
    matched = spec.match != "none"
    if kind == "ffa_lora":  # A frozen: the pair of experts' count as one LoRA of twice the rank
        return AdapterShape(1, spec.rank * (AVERAGED_EXPERTS if matched else 1), attn)
    if kind in SINGLE_LORA_KINDS and matched:
        return AdapterShape(AVERAGED_EXPERTS, spec.rank, attn, top_k=AVERAGED_EXPERTS, routed=False)
    return AdapterShape(1, spec.rank, attn)


def matching_rule(spec: MethodSpec) -> str:
    """One line for summary.json and `simfed report`: the rule and what it gave this method."""
    kind = spec.kind
    if kind == "pretrained":
        return "none (no adapters)"
    if kind not in SPEC_OF_KIND:
        return f"plugin ({kind}): its own adapters, not matched by simfed"
    r, a = spec.rank, spec.attn_rank
    if kind == "comigs" or kind in MOE_KINDS:
        experts = "E (from the budget)" if kind == "comigs" and spec.variant == "1gxs" else "E = 2"
        return f"reference (the model baselines match): {experts} MLP experts of rank {r}, attention rank {a}"
    if kind in RANKED_KINDS:
        rule = {"paper": "paper (= full)", "full": "full", "active": "active", "none": "none"}[spec.match]
        mult = {"paper": "E", "full": "E", "active": "min(E, 2)", "none": "1"}[spec.match]
        return (f"{rule}: MLP rank {r} × {mult} (E: the CoMiGS-1GXS count of the same budget), "
                f"clipped to [{spec.min_rank}, {spec.max_rank}]; attention rank {a}, averaged uniformly")
    if spec.match == "none":
        return f"none: one LoRA of rank {r} on the MLP, attention rank {a}"
    if kind == "ffa_lora":
        return f"{spec.match}: one MLP LoRA of rank {AVERAGED_EXPERTS * r} (A frozen), attention rank {a}"
    return f"{spec.match}: {AVERAGED_EXPERTS} MLP LoRA experts of rank {r} averaged, no router; attention rank {a}"


def lb_rule(spec: MethodSpec, shape_has_router: bool) -> str:
    """The load-balancing form a method used, for the outputs."""
    if not shape_has_router:
        return "none (no router)"
    if spec.lb_form == "generalist":
        return f"generalist-favoured (importance {spec.lb_importance:g}), λ = {spec.lb_lambda:g}"
    return f"uniform, λ = {spec.lb_lambda:g}"


def describe_lora(shape: AdapterShape) -> str:
    """A device label for a baseline's adapters: 'LoRA r8' or '2×LoRA r8 avg'."""
    if shape.n_experts > 1 and not shape.routed:
        return f"{shape.n_experts}×LoRA r{shape.mlp_rank} avg"
    return f"LoRA r{shape.mlp_rank}"
