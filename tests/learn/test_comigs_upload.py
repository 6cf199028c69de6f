"""What a CoMiGS device uploads: the generalist and the attention LoRA, never a specialist or a router.

Names and shapes are written out by hand for tiny-gpt2 (2 layers, d_model 64, d_ff 256, rank 8):
  attention  c_attn 64→192, c_proj 64→64       A (8, in), B (out, 8)
  MLP        c_fc 64→256,   c_proj 256→64      per expert
"""
from __future__ import annotations

import pytest
import torch

from simfed.learn.methods.base import LocalPlan
from simfed.learn.methods.comigs import CoMiGS
from simfed.learn.spec import TrainingSpec, method_spec
from simfed.run.payload import TRAVEL_DTYPES, payload_bytes, shapes_bytes
from tests.learn.helpers import FLAGSHIP, LOW_END, clients_for

RANK = 8
ATTN = {"c_attn": (64, 192), "c_proj": (64, 64)}
MLP = {"c_fc": (64, 256), "c_proj": (256, 64)}
TRAINING = TrainingSpec(local_steps=1, batch_size=2, seq_len=32, eval_windows=2)


def lora_pair(prefix: str, d_in: int, d_out: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.lora_A": (RANK, d_in), f"{prefix}.lora_B": (d_out, RANK)}


def expected_upload(experts: list[int]) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for layer in (0, 1):
        for name, (i, o) in ATTN.items():
            out |= lora_pair(f"layers.{layer}.attn.{name}", i, o)
        for e in experts:
            for name, (i, o) in MLP.items():
                out |= lora_pair(f"layers.{layer}.mlp.experts.{e}.{name}", i, o)
    return out


def one_round(model, data, variant: str, budgets) -> tuple[CoMiGS, list]:
    method = CoMiGS(method_spec(name=variant, kind="comigs", variant=variant), TRAINING, model)
    method.setup(clients_for(data, budgets), seed=0)
    updates = [method.local_update(c, method.download(c), LocalPlan(0, 1, seed=0)) for c in range(len(budgets))]
    return method, updates


@pytest.mark.parametrize(
    "variant, budgets, shared_experts, n_experts",
    [
        ("1g1s", [LOW_END, LOW_END], [0], [2, 2]),
        ("2s", [LOW_END, LOW_END], [], [2, 2]),
        ("1gxs", [FLAGSHIP, LOW_END], [0], [4, 2]),
        ("2g", [LOW_END, LOW_END], [0, 1], [2, 2]),
    ],
)
def test_upload_is_generalist_and_attention_only(tiny_gpt2, toy_data, variant, budgets, shared_experts, n_experts):
    method, updates = one_round(tiny_gpt2, toy_data, variant, budgets)
    expected = expected_upload(shared_experts)
    for c, update in enumerate(updates):
        assert method.fed.shapes[c].n_experts == n_experts[c]
        shapes = {name: tuple(t.shape) for name, t in update.upload.items()}
        assert shapes == expected
        assert not any("router" in name for name in shapes)
        assert method.upload_shapes(c) == shapes
        assert method.download_shapes(c) == shapes
        # the device really holds what it does not send: specialists and routers stay local
        local = method.fed.store.get_or_create(c).adapters.views()
        private = set(local) - set(shapes)
        n_private_experts = n_experts[c] - len(shared_experts)
        assert sum(".router." in n for n in private) == 2
        assert len(private) == 2 + 2 * 2 * 2 * n_private_experts  # routers + layers × linears × (A, B)


def test_upload_is_the_trained_tensors_not_the_download(tiny_gpt2, toy_data):
    method, updates = one_round(tiny_gpt2, toy_data, "1g1s", [LOW_END, LOW_END])
    local = method.fed.store.get_or_create(0).adapters.views()
    for name, t in updates[0].upload.items():
        assert torch.equal(t, local[name])
    b = "layers.1.mlp.experts.0.c_proj.lora_B"
    assert updates[0].upload[b].abs().sum() > 0  # B starts at 0: one step moved it


# --- bytes on the wire ------------------------------------------------------------------------

# per layer: c_attn 8·64 + 192·8 = 2048, c_proj 8·64 + 64·8 = 1024,
# generalist c_fc 8·64 + 256·8 = 2560, c_proj 8·256 + 64·8 = 2560  → 8192; two layers → 16384
UPLOAD_NUMEL_1G1S = 16_384


@pytest.mark.parametrize("dtype, bytes_per_value", [("float32", 4), ("float16", 2), ("bfloat16", 2)])
def test_upload_bytes_match_the_layer_shapes(tiny_gpt2, toy_data, dtype, bytes_per_value):
    method, updates = one_round(tiny_gpt2, toy_data, "1g1s", [LOW_END, LOW_END])
    upload = updates[0].upload
    assert sum(t.numel() for t in upload.values()) == UPLOAD_NUMEL_1G1S
    assert payload_bytes(upload, dtype) == UPLOAD_NUMEL_1G1S * bytes_per_value
    # what actually travels (cast to the travel dtype) has the same size
    cast = {k: t.to(TRAVEL_DTYPES[dtype]) for k, t in upload.items()}
    assert sum(t.numel() * t.element_size() for t in cast.values()) == UPLOAD_NUMEL_1G1S * bytes_per_value
    # before any training, the shapes alone give the same count (what the simulator charges)
    assert shapes_bytes(method.upload_shapes(1), dtype) == UPLOAD_NUMEL_1G1S * bytes_per_value


def test_1gxs_can_give_a_device_the_generalist_alone(tiny_gpt2, toy_data):
    """min_experts = 1: a device of budget score 0.1 gets E = 1 — expert 0 (the generalist), no router;
    it trains, uploads the generalist and attention LoRA, and has no router phase."""
    from simfed.learn.methods.base import Budget, LocalPlan
    from simfed.learn.methods.registry import build_method
    from simfed.learn.spec import TrainingSpec, method_spec
    from tests.learn.helpers import FLAGSHIP, clients_for

    weakest = Budget(memory_bytes=3e9, flops_per_s=10e9)
    spec = method_spec(name="c", kind="comigs", variant="1gxs", max_experts=4, min_experts=1, tau=1)
    method = build_method(spec, TrainingSpec(local_steps=2, batch_size=2, seq_len=32, eval_windows=2), tiny_gpt2)
    method.setup(clients_for(toy_data, [FLAGSHIP, weakest]), seed=0)
    assert [method.fed.shapes[c].n_experts for c in (0, 1)] == [4, 1]
    assert method.describe_client(1) == "1G"
    update = method.local_update(1, method.download(1), LocalPlan(0, 2, seed=0))
    state = method.fed.store.get_or_create(1)
    assert state.router_opt is None and state.adapters.router_parameters() == []
    experts = {int(n.split(".")[4]) for n in update.upload if ".experts." in n}
    assert experts == {0} and any(".attn." in n for n in update.upload)
    assert set(update.upload) == set(method.upload_shapes(1))
    method.aggregate([update], 0)
