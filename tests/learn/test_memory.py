"""Memory need of training (simfed/learn/memory.py), hand-computed on tiny-gpt2, and the engine's exclusion."""
from __future__ import annotations

import pytest
import torch

from simfed.learn.adapters import AdapterShape
from simfed.learn.flops import ModelDims
from simfed.learn.memory import base_params, memory_need, trainable_params
from tests.sim.fakes import FakeWorkload, of_kind, plain_device, run, world


def test_tiny_gpt2_dims(tiny_gpt2):
    dims = ModelDims.of(tiny_gpt2)
    assert dims.attn_linears == ((64, 192), (64, 64)) and dims.mlp_up == ((64, 256),) and dims.mlp_down == (256, 64)


def test_memory_need_by_hand_on_tiny_gpt2(tiny_gpt2):
    dims = ModelDims.of(tiny_gpt2)
    shape = AdapterShape(2, mlp_rank=8, attn_rank=8)  # CoMiGS 1G1S
    # base: 2 layers × (64·192 + 64·64 + 64·256 + 256·64) + 257·64 = 2 × 49152 + 16448
    assert base_params(dims) == 114_752
    # trainable per layer: attn 8·(256 + 128) = 3072; experts 2·8·(320 + 320) = 10240; router 2·64 = 128
    assert trainable_params(dims, shape) == 2 * (3072 + 10240 + 128) == 26_880
    need = memory_need(dims, shape, batch_size=4, seq_len=64)
    assert need.base == 4 * 114_752 == 459_008
    assert need.adapters == 16 * 26_880 == 430_080  # fp32 weights, grads, two AdamW moments
    # activations: 4·64 tokens × 4 B × (2 layers × (8·64 + (4 + 1)·2·256) + 3·257) = 1024 × 6915:
    # GPT-2's tanh-GELU keeps 4 tensors of d_ff (below), the down LoRA reads h_e, 2 experts
    assert need.activations == 1024 * 6915 == 7_080_960
    assert need.total == 459_008 + 430_080 + 7_080_960


def test_trainable_params_equal_the_real_adapters(tiny_gpt2):
    dims = ModelDims.of(tiny_gpt2)
    for shape in (AdapterShape(2, 8, 8), AdapterShape(1, 16, 16), AdapterShape(4, 8, 8)):
        adapters = tiny_gpt2.new_adapters(shape, torch.Generator().manual_seed(0))
        assert trainable_params(dims, shape) == sum(p.numel() for p in adapters.parameters())


class NeedyWorkload(FakeWorkload):
    def memory_need(self, device: int) -> int:
        return 7_000_000_000 if device % 2 else 1_000_000_000  # odd devices need more than their 6 GB


def test_exclude_never_selects_a_device_that_does_not_fit():
    spec = world([{"count": 6, "tier": "phone_mid", "link": "lte"}], rounds=3, target_per_round=3,
                 over_selection=1.0)
    fleet = [plain_device(d) for d in range(6)]
    for policy, expected in (("ignore", []), ("exclude", [1, 3, 5])):
        events, tally, workload, engine = run(spec.model_copy(update={"memory_policy": policy}),
                                              NeedyWorkload(), fleet=fleet)
        assert engine.excluded == expected
        selected = {e.device for e in of_kind(events, "selected")}
        if policy == "exclude":
            assert selected == {0, 2, 4}
        else:
            assert selected & {1, 3, 5}


def test_shrink_sizes_a_device_as_if_it_had_less_memory_until_its_training_fits(tiny_gpt2, monkeypatch):
    """With a need of 2 GB per expert (patched), a 6 GB, 200 GFLOP/s device is sized for 4 experts
    (score 0.75), which needs 8 GB; sized as a 3 GB device it gets 3 experts (6 GB): it fits. A
    1 GB device cannot go below 1G1S (4 GB): shrink leaves it, and the engine excludes it."""
    import dataclasses

    import numpy as np

    import simfed.run.runner as runner
    from simfed.data.federated import UserData
    from simfed.learn.methods.base import Budget, ClientInfo
    from simfed.learn.spec import TrainingSpec, method_spec

    import simfed.learn.methods.adapter_method as adapter_method

    monkeypatch.setattr(adapter_method, "memory_need",
                        lambda dims, shape, *rest: dataclasses.make_dataclass("N", [("total", int)])(2_000_000_000 * shape.n_experts))
    tokens = np.arange(2000, dtype=np.int64) % 200
    data = UserData(name="u", source="toy", train=tokens, val=tokens, test=tokens)
    fleet = [dataclasses.replace(plain_device(0, 200e9), memory_bytes=6_000_000_000),
             dataclasses.replace(plain_device(1, 200e9), memory_bytes=1_000_000_000)]
    clients = [ClientInfo(d.device_id, Budget(float(d.memory_bytes), d.flops_per_s), data) for d in fleet]
    training = TrainingSpec(local_steps=1, batch_size=2, seq_len=16)
    comigs = method_spec(name="c", kind="comigs", variant="1gxs", max_experts=4)

    ignored, _ = runner.setup_method(comigs, training, tiny_gpt2, clients, 0, fleet, "exclude")
    assert [ignored.fed.shapes[c].n_experts for c in (0, 1)] == [4, 2]
    method, sized = runner.setup_method(comigs, training, tiny_gpt2, clients, 0, fleet, "shrink")
    assert [method.fed.shapes[c].n_experts for c in (0, 1)] == [3, 2]
    assert sized[0].budget.memory_bytes == 3e9  # one halving


def test_dry_mode_shrinks_by_the_same_rule(tiny_gpt2, monkeypatch):
    import dataclasses

    import simfed.run.dry as dry
    from simfed.learn.spec import TrainingSpec, method_spec

    monkeypatch.setattr(dry, "memory_need",
                        lambda dims, shape, *rest: dataclasses.make_dataclass("N", [("total", int)])(2_000_000_000 * shape.n_experts))
    device = dataclasses.replace(plain_device(0, 200e9), memory_bytes=6_000_000_000)
    spec = method_spec(name="c", kind="comigs", variant="1gxs", max_experts=4)
    training = TrainingSpec(local_steps=1, batch_size=2, seq_len=16)
    dims = ModelDims.of(tiny_gpt2)
    assert dry.DryMethod(spec, training, dims, "exclude").shape(device).n_experts == 4
    assert dry.DryMethod(spec, training, dims, "shrink").shape(device).n_experts == 3


def test_memory_counts_the_cards_weight_dtype_and_the_compute_dtype(tiny_gpt2):
    """A bf16 card halves the frozen weights; bf16 autocast halves the layers' activations but not
    the head's (the loss upcasts the logits); the adapters, trained in fp32 with fp32 AdamW
    moments, stay at 16 bytes a parameter."""
    dims = ModelDims.of(tiny_gpt2)
    shape = AdapterShape(2, mlp_rank=8, attn_rank=8)
    fp32 = memory_need(dims, shape, batch_size=4, seq_len=64)
    bf16 = memory_need(dims, shape, batch_size=4, seq_len=64, weight_bytes=2, activation_bytes=2)
    assert bf16.base == 2 * 114_752 and bf16.adapters == fp32.adapters == 16 * 26_880
    # per token: the layers' 2 × (8·64 + 5·2·256) = 6144 at 2 B; the head's 3·257 stays fp32
    assert bf16.activations == 256 * (6144 * 2 + 3 * 257 * 4) == 3_935_232


def test_the_activation_keeps_what_its_backward_needs(tiny_gpt2, tiny_llama):
    """silu'(x) needs x: one tensor. GPT-2's GELU, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) in
    elementary ops: x³'s derivative needs x, tanh's its result, and the last product its two
    factors 0.5·x and 1 + tanh(…): four (the products by constants keep nothing of input size).
    The dry-mode skeleton (meta device, from the card alone) counts the same."""
    from transformers.activations import NewGELUActivation

    from simfed.learn.model_card import load_card
    from simfed.learn.saved_tensors import kept_per_element
    from simfed.run.dry import model_dims

    assert kept_per_element(torch.nn.functional.silu) == 1
    assert kept_per_element(NewGELUActivation()) == 4
    assert kept_per_element(torch.nn.Identity()) == 0  # no graph of its own
    assert kept_per_element(torch.relu) == 0  # keeps only its output, which the MLP keeps anyway
    state = torch.random.get_rng_state()
    with torch.no_grad():  # a probe inside a no-grad region still sees the backward's needs
        assert kept_per_element(torch.nn.functional.silu) == 1
    assert torch.equal(torch.random.get_rng_state(), state)  # draws nothing: resume stays exact
    assert ModelDims.of(tiny_gpt2).mlp_act_kept == 4 and ModelDims.of(tiny_llama).mlp_act_kept == 1
    assert model_dims(load_card("tiny-gpt2")) == ModelDims.of(tiny_gpt2)
    assert model_dims(load_card("tiny-llama")) == ModelDims.of(tiny_llama)


@pytest.mark.parametrize("n_experts", [1, 2])
@pytest.mark.parametrize("card", ["gpt2", "llama"])
def test_the_activation_term_is_what_a_real_step_keeps(request, card, n_experts):
    """memory_need's activation term against an expert step's own autograd graph: the tensors the
    forward saved (walked, each storage once, weights left out) plus the two vocab-wide fp32
    gradients the backward makes first (log-probabilities', logits'), within 10% — the formula's
    8 d-wide tensors a layer is its one approximation (norm statistics, GQA's narrower k and v)."""
    from simfed.learn.local_update import next_token_loss
    from simfed.learn.saved_tensors import saved_storages, weight_storages

    model = request.getfixturevalue(f"tiny_{card}")
    shape = AdapterShape(n_experts, mlp_rank=8, attn_rank=8)
    adapters = model.new_adapters(shape, torch.Generator().manual_seed(0))
    for p in adapters.router_parameters():
        p.requires_grad_(False)  # an expert step
    ids = torch.randint(0, 257, (4, 65), generator=torch.Generator().manual_seed(1))
    with model.using(adapters):
        loss = next_token_loss(model, ids)
    kept = sum(saved_storages(loss, weight_storages(model.model, adapters)).values()) + 2 * 257 * (4 * 64) * 4
    need = memory_need(ModelDims.of(model), shape, batch_size=4, seq_len=64).activations
    assert kept == pytest.approx(need, rel=0.10)
