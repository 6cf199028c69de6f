"""Typed scenario sections owned by the learning side: the methods and the local training recipe."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MethodSpec(_Strict):
    """One method to compare; `name` labels it in the outputs, `kind` picks the implementation."""

    name: str
    kind: Literal[
        "comigs", "hetlora", "fedavg", "local",
        "ffa_lora", "flexlora", "pcl", "pretrained", "centralized",
        "local_moe", "fedavg_moe", "pfedmoe",
    ]
    # CoMiGS: 1g1s (E=2), 2g, 2s, 1gxs (E per device from its budget)
    variant: Literal["1g1s", "2g", "2s", "1gxs"] = "1g1s"
    rank: PositiveInt = 8  # LoRA rank of every MLP expert (CoMiGS, baselines; HetLoRA/FlexLoRA: per expert counted)
    max_experts: PositiveInt = 4  # 1GXS: a device never holds more experts than this
    # HetLoRA: ranks from the budget, matched to CoMiGS's trainable parameters
    min_rank: PositiveInt = 4
    max_rank: PositiveInt = 32
    # parameter matching (simfed/learn/matching.py): paper = the paper's trainable budget for each baseline
    # (Local/FedAvg/PCL/Centralized: two MLP LoRA experts averaged, no router; FFA-LoRA: MLP rank 2·rank;
    # HetLoRA/FlexLoRA: MLP rank = rank × E, as full); active: HetLoRA/FlexLoRA rank × min(E, 2);
    # none: one LoRA of `rank` (HetLoRA/FlexLoRA: `rank` on every device). CoMiGS and the MoE kinds ignore it.
    match: Literal["paper", "full", "active", "none"] = "paper"
    prune_lambda: float = Field(5e-3, ge=0)  # self-pruning regulariser weight λ_p
    prune_gamma: float = Field(0.99, gt=0, le=1)
    norm_weighting: Literal["product", "per_matrix"] = "product"
    lb_lambda: float = Field(0.01, ge=0)  # load-balancing weight
    lb_form: Literal["uniform", "generalist"] = "uniform"
    tau: PositiveInt = 30  # expert steps between router phases (global step counter)
    router_steps: PositiveInt = 10
    router_lr: float = Field(2e-3, gt=0)
    aggregation_weights: Literal["uniform", "tokens"] = "uniform"
    # CoMiGS: "train" is the -tr ablation (router phases on fresh training batches, not validation)
    router_split: Literal["val", "train"] = "val"
    # PCL: devices mix their peers' models after training in 0-based round r when r >= pcl_start and
    # (r - pcl_start) % pcl_every == 0 (defaults: rounds 4, 6, 8, ... — the reference's r > 3 and r % 2 == 0)
    pcl_start: int = Field(4, ge=0)
    pcl_every: PositiveInt = 2
    # server.policy fedbuff/fedasync: server ← server + server_lr · Σ w_i Δ_i / Σ w_i (simfed/learn/aggregate.py)
    server_lr: float = Field(1.0, gt=0)

    # --- issue 12: the paper's setting (fidelity fixes, parameter matching) ---------------------------
    # (besides: `match` above gained "paper" (now the default) and "none"; `pcl_start` counts rounds
    # after which PCL mixes; `aggregation_weights: tokens` weighs by training-split sizes)
    attn_rank: PositiveInt = 8  # attention LoRA rank of every adapter kind (the paper fixes it at 8; never per device)
    min_experts: PositiveInt = 2  # budget rule's smallest E (comigs 1gxs; hetlora/flexlora ranks): 1 = generalist only
    lb_importance: float = Field(0.5, gt=0, lt=1)  # lb_form generalist: the generalist's importance (paper eq. 6)


# kinds whose Method implements aggregate_async (FedBuff/FedAsync); the others run only server.policy: sync
ASYNC_KINDS = ("comigs", "fedavg", "hetlora")


class TrainingSpec(_Strict):
    """The local recipe every method shares, so that methods differ only in what they are."""

    local_steps: PositiveInt = 10  # expert (optimizer) steps a device runs per round
    batch_size: PositiveInt = 4  # sequences per step
    seq_len: PositiveInt = 128  # tokens per sequence
    lr: float = Field(2e-3, gt=0)  # peak lr; cosine to lr/10 over all steps of the run
    weight_decay: float = Field(0.01, ge=0)
    eval_every: PositiveInt = 1  # evaluate every device after every Nth round
    # deterministic test windows per device, or "all": the whole test split, consecutive windows
    # (simfed/learn/evaluate.py; with a standard error per device and for the mean either way)
    eval_windows: PositiveInt | Literal["all"] = 16
    payload_dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # dtype tensors travel in
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto = bf16 autocast on a GPU that supports it, fp32 on CPU (where bf16 is slow and changes results)
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    threads: int = Field(0, ge=0)  # torch intra-op threads; 0 = torch's default
    # how the host runs a CoMiGS mixture's experts (simfed/learn/lora.py MixtureMLP; equal to 1e-6,
    # simulated costs unaffected): grouped = only each token's top-k experts, dense = all E;
    # auto = grouped when E > k, dense otherwise (nothing to skip)
    expert_compute: Literal["auto", "dense", "grouped"] = "auto"
    state_memory_mb: float | None = Field(None, ge=0)  # devices' adapter+AdamW states kept in RAM up to this, the least recently used beyond it spilled to RUN_DIR/spill (safetensors); None = all in RAM
    save_routing: bool = False  # at each evaluation, append per-layer routing weights on the test windows to RUN_DIR/routing.jsonl (simfed/learn/routing.py)
    dry: bool = False  # systems only: costs from the model card's shapes, no training or evaluation (simfed/run/dry.py)
