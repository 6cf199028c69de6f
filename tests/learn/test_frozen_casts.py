"""The frozen weights' bf16 copies, made once (simfed/learn/frozen_casts.py), against autocast's own
per-call casts: the same logits and gradients bit for bit, the copies in place only inside an
autocast region, made again when a weight changes, and freed with the precision that needed them."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from simfed.learn.adapters import AdaptedModel, AdapterShape
from simfed.learn.local_update import next_token_loss
from tests.learn.conftest import adapted
from tests.learn.helpers import random_ids, randomise_lora_b

BF16 = torch.bfloat16


def linear_params(model: AdaptedModel) -> int:
    """Weights and biases of the frozen linear maps, counted from the modules' own shapes: what the
    bf16 copies hold, 2 bytes each (a head tied to the embedding is a linear map: its copy counts)."""
    total = 0
    for module in model.model.modules():
        if isinstance(module, (nn.Linear, Conv1D)):
            total += module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)
    return total


def step(model: AdaptedModel, devices: list, ids: torch.Tensor, plain_autocast: bool) -> list[torch.Tensor]:
    """Logits and every adapter gradient of one step of `devices` (rows grouped by device): under
    the model's own region (`using_rows`), or with the adapters attached by hand under a bare
    `torch.autocast` (no copies: autocast casts at every call, as without simfed)."""
    params = [p for d in devices for p in d.parameters()]
    if plain_autocast:
        if len(devices) == 1:
            model.attach(devices[0])
        else:
            model.attach_rows(devices)
        try:
            with torch.autocast(device_type=ids.device.type, dtype=BF16):
                loss = next_token_loss(model, ids)
        finally:
            model.attach(None)
    else:
        with model.using_rows(devices):
            loss = next_token_loss(model, ids)
    return [loss.detach(), *torch.autograd.grad(loss, params)]


def check_bit_for_bit(card: str, n_experts: int, n_devices: int, device: str) -> None:
    model = adapted(card)
    model.model.to(device)
    model.autocast = BF16
    shape = AdapterShape(n_experts, mlp_rank=4, attn_rank=4)
    devices = [model.new_adapters(shape, torch.Generator().manual_seed(k)).to(device) for k in range(n_devices)]
    for k, d in enumerate(devices):
        randomise_lora_b(d, seed=10 + k)
    ids = random_ids(2 * n_devices, 17, seed=3).to(device)
    reference = step(model, devices, ids, plain_autocast=True)
    assert model.frozen_casts.nbytes() == 0  # the bare autocast made no copies
    ours = step(model, devices, ids, plain_autocast=False)
    assert model.frozen_casts.nbytes() == 2 * linear_params(model)  # ... and the region did
    assert len(ours) == len(reference)
    for a, b in zip(ours, reference):
        assert torch.equal(a, b)


@pytest.mark.parametrize("n_devices", [1, 2])
@pytest.mark.parametrize("n_experts", [1, 3])
@pytest.mark.parametrize("card", ["tiny-gpt2", "tiny-llama"])
def test_a_bf16_step_with_the_copies_is_autocast_bit_for_bit(card, n_experts, n_devices):
    """GPT-2 (Conv1D with biases, tied head) and Llama (Linear, tied head); one device and two in
    one batch; a mixture of 3 experts and a plain LoRA: the loss and every gradient equal."""
    check_bit_for_bit(card, n_experts, n_devices, "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_bf16_step_with_the_copies_is_autocast_bit_for_bit_on_cuda():
    for card in ["tiny-gpt2", "tiny-llama"]:
        for n_experts, n_devices in [(1, 2), (3, 1), (3, 2)]:
            check_bit_for_bit(card, n_experts, n_devices, "cuda")


def test_the_copies_are_in_place_only_inside_a_region():
    """Inside: every frozen linear weight bf16, the embedding fp32 even where the head is tied to
    it; after (and after an error inside): the very fp32 parameters the model was loaded with."""
    model = adapted("tiny-llama")
    model.autocast = BF16
    head, embedding = model.model.get_output_embeddings(), model.model.get_input_embeddings()
    assert head.weight is embedding.weight  # tied
    before = {name: p for name, p in model.model.named_parameters(remove_duplicate=False)}
    adapters = model.new_adapters(AdapterShape(2, 4, 4), torch.Generator().manual_seed(0))
    with pytest.raises(KeyError):
        with model.using(adapters):
            assert head.weight.dtype == BF16 and embedding.weight.dtype == torch.float32
            linears = [m for m in model.model.modules() if isinstance(m, nn.Linear)]
            assert linears and all(m.weight.dtype == BF16 for m in linears)
            with model.using(adapters):  # a region inside a region changes nothing
                assert head.weight.dtype == BF16
            assert head.weight.dtype == BF16
            raise KeyError("an error inside the region")
    after = {name: p for name, p in model.model.named_parameters(remove_duplicate=False)}
    assert after.keys() == before.keys() and all(after[n] is before[n] for n in before)
    assert head.weight is embedding.weight


def test_a_weight_changed_in_place_gets_a_new_copy():
    """A copy made before a frozen weight changed is not used after: the step equals autocast's on
    the changed weight."""
    model = adapted("tiny-gpt2")
    model.autocast = BF16
    adapters = model.new_adapters(AdapterShape(1, 4, 4), torch.Generator().manual_seed(0))
    randomise_lora_b(adapters, seed=1)
    ids = random_ids(2, 17, seed=2)
    step(model, [adapters], ids, plain_autocast=False)  # the copies are made
    with torch.no_grad():
        model.mlp_sites[0].mlp.c_fc.weight.mul_(3.0)
    reference = step(model, [adapters], ids, plain_autocast=True)
    ours = step(model, [adapters], ids, plain_autocast=False)
    assert all(torch.equal(a, b) for a, b in zip(ours, reference))


def test_fp32_makes_no_copies_and_leaving_bf16_frees_them():
    model = adapted("tiny-llama")
    adapters = model.new_adapters(AdapterShape(2, 4, 4), torch.Generator().manual_seed(0))
    ids = random_ids(2, 9, seed=0)
    with model.using(adapters):
        next_token_loss(model, ids)
    assert model.frozen_casts.nbytes() == 0
    model.autocast = BF16
    with model.using(adapters):
        next_token_loss(model, ids)
    assert model.frozen_casts.nbytes() == 2 * linear_params(model)
    model.autocast = None
    assert model.frozen_casts.nbytes() == 0


def test_a_write_into_a_copy_inside_a_region_is_refused():
    """Inside a region the modules hold the copies: a write there would never reach the fp32
    weight, so the region's end says so (and the next region makes fresh copies)."""
    model = adapted("tiny-llama")
    model.autocast = BF16
    adapters = model.new_adapters(AdapterShape(1, 4, 4), torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="written inside an autocast region"):
        with model.using(adapters):
            with torch.no_grad():
                model.mlp_sites[0].mlp.up_proj.weight.add_(1.0)
    assert model.mlp_sites[0].mlp.up_proj.weight.dtype == torch.float32
    with model.using(adapters):
        pass  # fresh copies, no error
