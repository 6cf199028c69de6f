"""The CUDA path (runs only where a GPU is present; this project's CPU machines skip it).

A scenario names no device: `training.device: auto` picks CUDA, `precision: auto` turns on bf16
autocast, and the same scenario trains there with perplexity dropping and fp32 adapters.
"""
from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_auto_picks_cuda_with_bf16_autocast():
    from simfed.learn.device import autocast_dtype, pick_device

    device = pick_device("auto")
    assert device.type == "cuda"
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    assert autocast_dtype("auto", device) == expected
    assert autocast_dtype("float32", device) is None


def test_a_scenario_trains_on_the_gpu_unchanged(run_text, tmp_path):
    from simfed.report.readers import read_metrics

    text = f"""
name: gpu_smoke
seeds: [0]
model: tiny-gpt2
data: {{users: [toy:a, toy:b], train_tokens: 3000, val_tokens: 800, test_tokens: 800, cache_dir: {tmp_path / "cache"}}}
training: {{local_steps: 4, batch_size: 4, seq_len: 32, eval_windows: 4}}
methods:
  - {{name: comigs, kind: comigs, variant: 1g1s, tau: 2, router_steps: 1}}
  - {{name: hetlora, kind: hetlora, min_rank: 4}}
world:
  fleet: [{{count: 2, tier: phone_mid, link: wifi_home}}]
  server: {{rounds: 3, target_per_round: 2, over_selection: 1.0, deadline_s: 600}}
"""
    run = run_text(text, tmp_path / "gpu.yaml", tmp_path / "runs")
    rows = read_metrics(run)
    for method in ("comigs", "hetlora"):
        ppl = {r["round"]: r["ppl"] for r in rows if r["method"] == method}
        assert ppl[3] < ppl[0]


def test_a_scenario_batched_and_one_by_one_on_the_gpu(run_text, tmp_path):
    """`executor.batch_devices` on CUDA: both ways train, and their perplexities agree in fp32
    (precision float32, TF32 off by default for matmuls) to float rounding; bf16 autocast batched
    trains too."""
    from simfed.report.readers import read_metrics

    def scenario(name: str, precision: str, batch: int) -> str:
        return f"""
name: {name}
seeds: [0]
model: tiny-gpt2
data: {{users: [toy:a, toy:b], train_tokens: 3000, val_tokens: 800, test_tokens: 800, cache_dir: {tmp_path / "cache"}}}
training: {{local_steps: 4, batch_size: 4, seq_len: 32, eval_windows: 4, precision: {precision}, device: cuda}}
methods:
  - {{name: comigs, kind: comigs, variant: 1gxs, min_experts: 1, tau: 2, router_steps: 1}}
  - {{name: hetlora, kind: hetlora, min_rank: 2}}
world:
  fleet:
    - {{count: 2, tier: phone_flagship, link: wifi_home}}
    - {{count: 2, tier: phone_low, link: wifi_home}}
  server: {{rounds: 3, target_per_round: 4, over_selection: 1.0, deadline_s: 100000}}
executor: {{kind: local, batch_devices: {batch}}}
"""

    runs = {(p, b): read_metrics(run_text(scenario(f"gpu_{p}_{b}", p, b), tmp_path / f"{p}{b}.yaml", tmp_path / "runs"))
            for p, b in [("float32", 1), ("float32", 4), ("auto", 4)]}
    for rows in runs.values():
        for method in ("comigs", "hetlora"):
            ppl = {}
            for r in rows:
                if r["method"] == method:
                    ppl.setdefault(r["round"], []).append(r["ppl"])
            assert sum(ppl[3]) < sum(ppl[0])
    for s, b in zip(runs[("float32", 1)], runs[("float32", 4)]):
        assert (s["method"], s["round"], s["device"]) == (b["method"], b["round"], b["device"])
        assert b["ppl"] == pytest.approx(s["ppl"], rel=1e-3)


def test_a_mixture_step_on_the_gpu_never_waits_for_the_host():
    """A CoMiGS local step on CUDA (E = 3 experts, top-2, so `expert_compute: auto` could have
    grouped them, bf16 autocast, AdamW) queues its forward, backward and update without one host
    synchronisation: `torch.cuda.set_sync_debug_mode("error")` turns any (`.item()`, `.tolist()`,
    a host-read of a size) into an error. The first step runs outside it (CUDA and cuBLAS set
    themselves up there)."""
    from simfed.learn.adapters import AdaptedModel, AdapterShape
    from simfed.learn.base_model import load_base_model
    from simfed.learn.local_update import next_token_loss
    from simfed.learn.model_card import load_card

    device = torch.device("cuda")
    model = AdaptedModel(load_base_model(load_card("tiny-llama"), device), torch.bfloat16)
    adapters = model.new_adapters(AdapterShape(n_experts=3, mlp_rank=4, attn_rank=4), torch.Generator().manual_seed(0))
    opt = torch.optim.AdamW(adapters.expert_parameters(), lr=1e-3)
    ids = torch.randint(0, int(model.model.config.vocab_size), (4, 33), device=device)
    assert not any(site.grouped_for(bank) for site, bank in zip(model.mlp_sites, [layer.mlp for layer in adapters.layers]))

    def step() -> torch.Tensor:
        with model.using(adapters):
            loss = next_token_loss(model, ids)
            (loss + 0.01 * adapters.load_balancing_loss()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    model.model.train()
    first = step()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = [step() for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.stack([first, *losses]).isfinite().all()
