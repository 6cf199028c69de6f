"""Typed scenario sections owned by the learning side: the methods and the local training recipe."""
from __future__ import annotations

import typing
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, TypeAdapter


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MethodSpec(_Strict):
    """What every method's section holds: `name` labels it in the outputs, `kind` picks the class.

    Each kind has its own spec (below): a key of another kind's spec is an error at its line
    (simfed/config.py). A plugin method (`kind: package.module:ClassName`, or a name under the
    `simfed.methods` entry points) subclasses this with its own keys (examples/my_method/)."""

    name: str
    kind: str

    def recipe_options(self) -> dict[str, Any]:
        """This kind's settings of the local loop (`simfed.learn.local_update.Recipe` fields):
        none by default — a kind without routers leaves the router settings unused."""
        return {}


# ---- option groups several kinds share (each field documented once) ----------------------------

class _Rank(MethodSpec):
    rank: PositiveInt = 8  # LoRA rank of every MLP expert (HetLoRA/FlexLoRA: per expert counted)
    attn_rank: PositiveInt = 8  # attention LoRA rank (the paper fixes it at 8; never per device)


class _Averaging(MethodSpec):
    # the server's mean over devices; tokens = weighted by each device's training-split size
    aggregation_weights: Literal["uniform", "tokens"] = "uniform"


class _ServerLr(MethodSpec):
    # server.policy fedbuff/fedasync: server ← server + server_lr · Σ w_i Δ_i / Σ w_i (simfed/learn/aggregate.py)
    server_lr: float = Field(1.0, gt=0)


class _LoadBalancing(MethodSpec):
    lb_lambda: float = Field(0.01, ge=0)  # load-balancing weight
    lb_form: Literal["uniform", "generalist"] = "uniform"
    lb_importance: float = Field(0.5, gt=0, lt=1)  # lb_form generalist: the generalist's importance (paper eq. 6)

    def recipe_options(self) -> dict[str, Any]:
        return {**super().recipe_options(), "lb_lambda": self.lb_lambda}


class _Matched(MethodSpec):
    # parameter matching (simfed/learn/matching.py): paper = the paper's trainable budget for each baseline
    # (Local/FedAvg/PCL/Centralized: two MLP LoRA experts averaged, no router; FFA-LoRA: MLP rank 2·rank;
    # HetLoRA/FlexLoRA: MLP rank = rank × E, as full); active: HetLoRA/FlexLoRA rank × min(E, 2);
    # none: one LoRA of `rank` (HetLoRA/FlexLoRA: `rank` on every device)
    match: Literal["paper", "full", "active", "none"] = "paper"


class _BudgetRank(_Matched):
    """HetLoRA/FlexLoRA: ranks from the budget, matched to CoMiGS's trainable parameters."""

    max_experts: PositiveInt = 4  # the CoMiGS-1GXS device the rank is matched to
    min_experts: PositiveInt = 2  # that device's smallest E (1 = generalist only)
    min_rank: PositiveInt = 4
    max_rank: PositiveInt = 32


# ---- one spec a kind --------------------------------------------------------------------------

class CoMiGSSpec(_Rank, _Averaging, _ServerLr, _LoadBalancing):
    kind: Literal["comigs"]
    implementation: ClassVar[str] = "simfed.learn.methods.comigs:CoMiGS"
    # 1g1s (E=2), 2g, 2s, 1gxs (E per device from its budget)
    variant: Literal["1g1s", "2g", "2s", "1gxs"] = "1g1s"
    max_experts: PositiveInt = 4  # 1GXS: a device never holds more experts than this
    min_experts: PositiveInt = 2  # 1GXS: the budget rule's smallest E (1 = generalist only, no router)
    tau: PositiveInt = 30  # expert steps between router phases (global step counter)
    router_steps: PositiveInt = 10
    router_lr: float = Field(2e-3, gt=0)
    # "train" is the -tr ablation (router phases on fresh training batches, not validation)
    router_split: Literal["val", "train"] = "val"

    def recipe_options(self) -> dict[str, Any]:
        return {**super().recipe_options(), "tau": self.tau, "router_steps": self.router_steps,
                "router_lr": self.router_lr, "router_split": self.router_split}


class HetLoRASpec(_Rank, _BudgetRank, _ServerLr):
    kind: Literal["hetlora"]
    implementation: ClassVar[str] = "simfed.learn.methods.hetlora:HetLoRA"
    prune_lambda: float = Field(5e-3, ge=0)  # self-pruning regulariser weight λ_p
    prune_gamma: float = Field(0.99, gt=0, le=1)
    norm_weighting: Literal["product", "per_matrix"] = "product"


class FlexLoRASpec(_Rank, _BudgetRank):
    kind: Literal["flexlora"]
    implementation: ClassVar[str] = "simfed.learn.methods.flexlora:FlexLoRA"


class FedAvgSpec(_Rank, _Matched, _Averaging, _ServerLr):
    kind: Literal["fedavg"]
    implementation: ClassVar[str] = "simfed.learn.methods.fedavg:FedAvg"


class LocalSpec(_Rank, _Matched):
    kind: Literal["local"]
    implementation: ClassVar[str] = "simfed.learn.methods.local:Local"


class FFALoRASpec(_Rank, _Matched, _Averaging):
    kind: Literal["ffa_lora"]
    implementation: ClassVar[str] = "simfed.learn.methods.ffa_lora:FFALoRA"


class PCLSpec(_Rank, _Matched):
    kind: Literal["pcl"]
    implementation: ClassVar[str] = "simfed.learn.methods.pcl:PCL"
    # devices mix their peers' models after training in 0-based round r when r >= pcl_start and
    # (r - pcl_start) % pcl_every == 0 (defaults: rounds 4, 6, 8, ... — the reference's r > 3 and r % 2 == 0)
    pcl_start: int = Field(4, ge=0)
    pcl_every: PositiveInt = 2


class PretrainedSpec(MethodSpec):
    kind: Literal["pretrained"]
    implementation: ClassVar[str] = "simfed.learn.methods.pretrained:Pretrained"


class CentralizedSpec(_Rank, _Matched, _Averaging):
    kind: Literal["centralized"]
    implementation: ClassVar[str] = "simfed.learn.methods.centralized:Centralized"


class JointMoESpec(_Rank, _Averaging, _LoadBalancing):
    kind: Literal["local_moe", "fedavg_moe", "pfedmoe"]
    implementation: ClassVar[str] = "simfed.learn.methods.joint_moe:JointMoE"


# The built-in kinds, in the order `simfed` lists them. The registry (learn/methods/registry.py)
# maps each to its class through `implementation`, lazily, so that reading a scenario needs no torch.
BUILTIN_SPECS: tuple[type[MethodSpec], ...] = (
    CoMiGSSpec, HetLoRASpec, FedAvgSpec, LocalSpec, FFALoRASpec, FlexLoRASpec, PCLSpec, PretrainedSpec,
    CentralizedSpec, JointMoESpec,
)


def kinds_of(spec_type: type[MethodSpec]) -> tuple[str, ...]:
    """The `kind` values a spec class accepts (its Literal; a plugin's `kind: str` accepts any)."""
    return tuple(typing.get_args(spec_type.model_fields["kind"].annotation))


SPEC_OF_KIND: dict[str, type[MethodSpec]] = {k: t for t in BUILTIN_SPECS for k in kinds_of(t)}

# The discriminated union of the built-in specs: `kind` picks the member (pydantic validates the
# rest against that member only, so `kind: fedavg, prune_lambda: 0.1` is an error).
BuiltinMethodSpec = Annotated[Union[tuple(BUILTIN_SPECS)], Field(discriminator="kind")]
_BUILTIN = TypeAdapter(BuiltinMethodSpec)


def method_spec(**fields: Any) -> MethodSpec:
    """A built-in method's spec from keyword arguments (`method_spec(name="h", kind="hetlora")`)."""
    return _BUILTIN.validate_python(fields)


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
    # auto = grouped when E > k on a CPU, dense otherwise (nothing to skip; on a GPU: no host sync)
    expert_compute: Literal["auto", "dense", "grouped"] = "auto"
    # the dense path's per-expert work (LoRA terms, routing, element-wise) compiled with
    # torch.compile (simfed/learn/lora.py MixtureMLP._fused_dense): faster on the host, gradients
    # equal to ~1e-7, not bit for bit; a CPU needs a C++ compiler; simulated costs unaffected
    fuse_mixture: bool = False
    state_memory_mb: float | None = Field(None, ge=0)  # devices' adapter+AdamW states kept in RAM up to this, the least recently used beyond it spilled to RUN_DIR/spill (safetensors); None = all in RAM
    save_routing: bool = False  # at each evaluation, append per-layer routing weights on the test windows to RUN_DIR/routing.jsonl (simfed/learn/routing.py)
    dry: bool = False  # systems only: costs from the model card's shapes, no training or evaluation (simfed/run/dry.py)
