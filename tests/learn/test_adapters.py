"""Injection and payload names: fresh adapters are a no-op, views share storage, copy_into checks."""
from __future__ import annotations

import pytest
import torch

from simfed.learn.adapters import AdapterShape, copy_into
from tests.learn.helpers import random_ids


@pytest.mark.parametrize("n_experts", [1, 2, 4])
@pytest.mark.parametrize("card", ["gpt2", "llama"])
def test_fresh_adapters_leave_logits_unchanged(request, card, n_experts):
    model = request.getfixturevalue(f"tiny_{card}")
    ids = random_ids(2, 24, seed=0)
    adapters = model.new_adapters(AdapterShape(n_experts, 8, 8), torch.Generator().manual_seed(1))
    with torch.no_grad():
        bare = model.logits(ids)
        with model.using(adapters):
            adapted = model.logits(ids)
        again = model.logits(ids)
    torch.testing.assert_close(adapted, bare, rtol=1e-5, atol=1e-5)
    assert torch.equal(again, bare)  # `using` detached the adapters again


def test_base_model_never_holds_device_tensors(tiny_gpt2):
    names_before = set(tiny_gpt2.model.state_dict())
    adapters = tiny_gpt2.new_adapters(AdapterShape(2, 8, 8), torch.Generator().manual_seed(0))
    with tiny_gpt2.using(adapters):
        assert set(tiny_gpt2.model.state_dict()) == names_before
        assert not any(p.requires_grad for p in tiny_gpt2.model.parameters())


def test_views_share_storage_with_the_parameters(tiny_llama):
    adapters = tiny_llama.new_adapters(AdapterShape(3, 4, 2), torch.Generator().manual_seed(0))
    views = adapters.views()
    assert views["layers.0.attn.q_proj.lora_A"].shape == (2, 64)
    assert views["layers.1.mlp.experts.2.down_proj.lora_B"].shape == (64, 4)
    assert views["layers.1.mlp.router.weight"].shape == (3, 64)
    views["layers.1.mlp.experts.2.down_proj.lora_B"].fill_(0.5)
    assert torch.all(adapters.layers[1].mlp.down.lora_B[2] == 0.5)
    assert torch.all(adapters.layers[1].mlp.down.lora_B[1] == 0.0)


def test_copy_into_writes_in_place_and_rejects_mismatches(tiny_llama):
    adapters = tiny_llama.new_adapters(AdapterShape(2, 4, 4), torch.Generator().manual_seed(0))
    name = "layers.0.mlp.experts.0.gate_proj.lora_A"
    copy_into(adapters, {name: torch.ones(4, 64)})
    assert torch.all(adapters.layers[0].mlp.ups[0].lora_A[0] == 1.0)
    with pytest.raises(KeyError, match="experts.5"):
        copy_into(adapters, {"layers.0.mlp.experts.5.gate_proj.lora_A": torch.ones(4, 64)})
    with pytest.raises(ValueError, match="shape"):
        copy_into(adapters, {name: torch.ones(8, 64)})


def test_init_follows_the_spec(tiny_gpt2):
    # A ~ U(±1/√in), B = 0, router ~ N(0, 0.02), s = alpha/√r = 16/√8
    adapters = tiny_gpt2.new_adapters(AdapterShape(2, 8, 8), torch.Generator().manual_seed(0))
    fc = adapters.layers[0].mlp.ups[0]
    assert fc.lora_A.abs().max() <= 1 / 64**0.5 and fc.lora_A.abs().max() > 0.9 / 64**0.5
    proj = adapters.layers[0].mlp.down
    assert proj.lora_A.abs().max() <= 1 / 256**0.5
    assert torch.all(proj.lora_B == 0)
    assert fc.scale == pytest.approx(16 / 8**0.5)
    router = adapters.layers[0].mlp.router.weight
    assert 0.015 < router.detach().std().item() < 0.025 and router.shape == (2, 64)
