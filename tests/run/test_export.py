"""Devices' models out of a run: PEFT adapters (peft loads them) and load_device_model score as simfed did.

The reference is metrics.csv, simfed's own evaluation of each device at the last round; the
exported models are scored here independently, with plain transformers/peft forwards on the same
deterministic test windows.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import simfed
from simfed.config import load_scenario
from simfed.errors import SimfedError
from simfed.data.federated import build_federation
from simfed.learn.base_model import load_base_model
from simfed.learn.evaluate import evaluation_windows
from simfed.learn.model_card import load_card
from simfed.report.readers import metrics_frame
from tests.run.conftest import tiny_gpt2_head

peft = pytest.importorskip("peft")

SCENARIO = tiny_gpt2_head("export_test", model="{model}", local_steps=3, lr=2.0e-2) + """\
  - {{name: fedavg, kind: fedavg, rank: 4, match: none}}  # one LoRA: a PEFT adapter (the matched pair is a mixture)
  - {{name: hetlora, kind: hetlora, rank: 2, min_rank: 2, max_rank: 8, prune_lambda: 5.0}}
  - {{name: flexlora, kind: flexlora, rank: 2, min_rank: 2, max_rank: 8}}
  - {{name: comigs, kind: comigs, variant: 1gxs, rank: 4, tau: 2, router_steps: 1}}
world:
  fleet:
    - {{count: 1, tier: phone_flagship, link: wifi_home}}
    - {{count: 2, tier: phone_mid, link: wifi_home, flops_per_s: 4.0e7}}
    - {{count: 1, tier: phone_low, link: wifi_home, flops_per_s: 1.0e7}}
  server: {{rounds: 3, target_per_round: 3, over_selection: 1.3, deadline_s: 600}}
output: {{save_models: final}}
"""
N_DEVICES = 4


@pytest.fixture(scope="module")
def run_dir(run_text, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("export")
    return run_text(SCENARIO.format(model="tiny-gpt2", cache=tmp / "cache"), tmp / "export_test.yaml", tmp / "runs")


def windows_of(run_dir: Path) -> list:
    scenario = load_scenario(run_dir / "scenario.resolved.yaml")
    base = load_base_model(load_card(scenario.model))
    users = build_federation(scenario.data, base.tokenizer, N_DEVICES, 0)
    t = scenario.training
    return [evaluation_windows(u.test, t.seq_len, t.eval_windows) for u in users]


def perplexity(model: torch.nn.Module, windows) -> float:
    """exp(mean next-token cross-entropy) over all windows, one forward of the whole set."""
    ids = torch.as_tensor(windows, dtype=torch.long)
    with torch.no_grad():
        logits = model(input_ids=ids[:, :-1]).logits.float()
    return math.exp(float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))))


def simfed_ppl(run_dir: Path, method: str) -> dict[int, float]:
    frame = metrics_frame(run_dir)
    last = frame[(frame["method"] == method) & (frame["device"] != "mean")]
    last = last[last["round"] == last["round"].max()]
    return {int(d): float(p) for d, p in zip(last["device"], last["ppl"])}


@pytest.mark.parametrize("method", ["fedavg", "hetlora", "flexlora"])
def test_exported_adapter_loads_with_peft_and_scores_as_simfed(run_dir: Path, tmp_path: Path, method: str) -> None:
    from peft import PeftModel

    windows = windows_of(run_dir)
    expected = simfed_ppl(run_dir, method)
    folders = simfed.export(run_dir, method, tmp_path / method)
    assert [f.name for f in folders] == [f"device-{d}" for d in range(N_DEVICES)]
    ranks = set()
    for d, folder in enumerate(folders):
        assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
        ranks.add(mlp_rank_and_alpha(folder)[0])  # attention LoRA keeps its fixed rank 8
        base = load_base_model(load_card("tiny-gpt2"))  # a fresh, unwrapped base model
        untrained = perplexity(base.model, windows[d])
        model = PeftModel.from_pretrained(base.model, str(folder))
        assert perplexity(model, windows[d]) == pytest.approx(expected[d], rel=1e-5)
        assert abs(untrained - expected[d]) > 1e-3 * expected[d]  # the adapter changed the model
    if method == "fedavg":
        assert ranks == {4}
    else:  # budget ranks differ across the tiers (flagship vs low)
        assert len(ranks) > 1


def mlp_rank_and_alpha(folder: Path) -> tuple[int, float]:
    """The rank and lora_alpha PEFT gives the MLP modules of an exported adapter (its rank_pattern /
    alpha_pattern entry for them, else the config's r / lora_alpha): HetLoRA's heterogeneity is on
    the MLP only, attention keeps rank 8 on every device."""
    config = json.loads((folder / "adapter_config.json").read_text())
    mlp = [p for p in config.get("rank_pattern") or {} if ".mlp." in p]
    r = config["rank_pattern"][mlp[0]] if mlp else config["r"]
    mlp_a = [p for p in config.get("alpha_pattern") or {} if ".mlp." in p]
    alpha = config["alpha_pattern"][mlp_a[0]] if mlp_a else config["lora_alpha"]
    return int(r), float(alpha)


def test_hetlora_adapter_is_at_the_devices_current_rank(run_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from simfed.learn.export import load_device

    pruned = 0
    for d in range(N_DEVICES):
        saved = load_device(run_dir / "models" / "hetlora" / "seed0" / "final" / f"device-{d}.safetensors")
        folder = simfed.export(run_dir, "hetlora", tmp_path / str(d), device=d)[0]
        config = json.loads((folder / "adapter_config.json").read_text())
        tensors = load_file(str(folder / "adapter_model.safetensors"))
        a = next(v for k, v in tensors.items() if k.endswith("lora_A.weight") and ".mlp." in k)
        r, alpha = mlp_rank_and_alpha(folder)
        assert r == a.shape[0] == saved.rank <= saved.shape.mlp_rank
        # the scale s = alpha/sqrt(r0) the device trained with is kept: lora_alpha/sqrt(r) = 16/sqrt(r0)
        assert config["use_rslora"] is True
        assert alpha / math.sqrt(r) == pytest.approx(16 / math.sqrt(saved.shape.mlp_rank))
        pruned += saved.rank < saved.shape.mlp_rank
    assert pruned > 0  # prune_lambda 5 makes self-pruning bite: the truncated, re-scaled path is exercised


def test_comigs_device_loads_scores_and_generates(run_dir: Path, tmp_path: Path) -> None:
    windows = windows_of(run_dir)
    expected = simfed_ppl(run_dir, "comigs")
    for d in range(N_DEVICES):
        model = simfed.load_device_model(run_dir, "comigs", d)
        assert perplexity(model, windows[d]) == pytest.approx(expected[d], rel=1e-5)
    out = model.generate(torch.tensor([[65, 66, 67]]), max_new_tokens=5, do_sample=False)
    assert out.shape == (1, 8)


def test_comigs_export_writes_named_expert_adapters_and_the_router(run_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from safetensors.torch import load_file

    from simfed.learn.export import load_device

    saved = load_device(run_dir / "models" / "comigs" / "seed0" / "final" / "device-0.safetensors")
    folder = simfed.export(run_dir, "comigs", tmp_path / "c", device=0)[0]
    mixture = json.loads((folder / "mixture.json").read_text())
    n = saved.shape.n_experts
    assert mixture["n_experts"] == n >= 2 and mixture["generalists"] == [0]
    assert mixture["adapters"] == ["attention"] + [f"expert_{e}" for e in range(n)]
    router = load_file(str(folder / "router.safetensors"))
    assert set(router) == {"layers.0.mlp.router.weight", "layers.1.mlp.router.weight"}
    assert router["layers.1.mlp.router.weight"].shape == (n, 64)
    base = load_base_model(load_card("tiny-gpt2"))
    model = PeftModel.from_pretrained(base.model, str(folder / "expert_0"), adapter_name="expert_0")
    for e in range(1, n):
        model.load_adapter(str(folder / f"expert_{e}"), adapter_name=f"expert_{e}")
    layer = model.base_model.model.transformer.h[1].mlp.c_fc
    for e in range(n):  # each named adapter holds that expert's LoRA of the saved device
        torch.testing.assert_close(layer.lora_B[f"expert_{e}"].weight,
                                   saved.tensors[f"layers.1.mlp.experts.{e}.c_fc.lora_B"])


def test_merged_checkpoint_scores_like_the_adapter(run_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    windows = windows_of(run_dir)
    expected = simfed_ppl(run_dir, "fedavg")
    folder = simfed.export(run_dir, "fedavg", tmp_path / "m", device=1, merged=True)[0]
    merged = AutoModelForCausalLM.from_pretrained(folder / "merged")
    assert perplexity(merged, windows[1]) == pytest.approx(expected[1], rel=1e-5)
    with pytest.raises(SimfedError, match="mixture"):
        simfed.export(run_dir, "comigs", tmp_path / "cm", device=0, merged=True)


def test_simfed_export_command(run_dir: Path, tmp_path: Path, capsys) -> None:
    from simfed.cli import main

    assert main(["export", str(run_dir), "--method", "flexlora", "--device", "2", "--out", str(tmp_path / "f")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "f")
    config = json.loads((tmp_path / "f" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == "tiny-gpt2"
    assert main(["export", str(run_dir), "--method", "nope", "--out", str(tmp_path / "n")]) == 2
    assert "no saved models of method 'nope'" in capsys.readouterr().err


def test_runs_without_save_models_keep_no_models(run_text, tmp_path: Path) -> None:
    text = SCENARIO.format(model="tiny-gpt2", cache=tmp_path / "cache").replace("output: {save_models: final}", "")
    text = text.replace("rounds: 3", "rounds: 1")
    run = run_text(text, tmp_path / "x.yaml", tmp_path / "runs")
    assert not (run / "models").exists()


def test_every_n_keeps_those_rounds_and_the_final(run_text, tmp_path: Path) -> None:
    text = SCENARIO.format(model="tiny-gpt2", cache=tmp_path / "cache").replace("save_models: final", "save_models: every_2")
    text = text.replace("rounds: 3", "rounds: 4").replace(
        "  - {name: hetlora", "  #").replace("  - {name: flexlora", "  #").replace("  - {name: comigs", "  #")
    run = run_text(text, tmp_path / "x.yaml", tmp_path / "runs")
    folder = run / "models" / "fedavg" / "seed0"
    assert sorted(p.name for p in folder.iterdir()) == ["final", "round-2", "round-4"]
    assert len(list((folder / "round-2").glob("device-*.safetensors"))) == N_DEVICES


SMALL = """
name: export_{tag}
model: {model}
data: {{users: [toy:a, toy:b], train_tokens: {train}, val_tokens: 600, test_tokens: 600, cache_dir: {cache}}}
training: {{local_steps: 2, batch_size: 2, seq_len: 32, eval_windows: 3, lr: 1.0e-2, precision: float32}}  # the exports load in fp32
methods:
  - {{name: fedavg, kind: fedavg, rank: 4, match: none}}  # one LoRA: a PEFT adapter (the matched pair is a mixture)
  - {{name: hetlora, kind: hetlora, rank: 2, min_rank: 2, max_rank: 8}}
  - {{name: flexlora, kind: flexlora, rank: 2, min_rank: 2, max_rank: 8}}
  - {{name: comigs, kind: comigs, variant: 1gxs, rank: 4, tau: 2, router_steps: 1}}
world:
  fleet:
    - {{count: 1, tier: phone_flagship, link: wifi_home}}
    - {{count: 1, tier: phone_low, link: wifi_home, flops_per_s: 1.0e7}}
  server: {{rounds: {rounds}, target_per_round: 2, over_selection: 1.0, deadline_s: 100000}}
output: {{save_models: final}}
"""


def check_every_export(run_dir: Path, tmp_path: Path, model: str, n_devices: int) -> None:
    """Every device of every method: PEFT adapters (single-LoRA) and load_device_model (CoMiGS)
    score as metrics.csv says, to 1e-5."""
    from peft import PeftModel

    scenario = load_scenario(run_dir / "scenario.resolved.yaml")
    base = load_base_model(load_card(model))
    users = build_federation(scenario.data, base.tokenizer, n_devices, 0)
    windows = [evaluation_windows(u.test, 32, 3) for u in users]
    for method in ("fedavg", "hetlora", "flexlora"):
        expected = simfed_ppl(run_dir, method)
        for d, folder in enumerate(simfed.export(run_dir, method, tmp_path / method)):
            fresh = load_base_model(load_card(model)).model
            assert perplexity(PeftModel.from_pretrained(fresh, str(folder)), windows[d]) == pytest.approx(
                expected[d], rel=1e-5), (method, d)
    expected = simfed_ppl(run_dir, "comigs")
    for d in range(n_devices):
        assert perplexity(simfed.load_device_model(run_dir, "comigs", d), windows[d]) == pytest.approx(
            expected[d], rel=1e-5)


def test_llama_shaped_exports_score_as_simfed(run_text, tmp_path: Path) -> None:
    text = SMALL.format(tag="llama", model="tiny-llama", train=2000, cache=tmp_path / "cache", rounds=2)
    run = run_text(text, tmp_path / "l.yaml", tmp_path / "runs")
    check_every_export(run, tmp_path, "tiny-llama", 2)


@pytest.mark.slow
def test_smollm2_exports_score_as_simfed(run_text, tmp_path: Path) -> None:
    text = SMALL.format(tag="smollm2", model="smollm2-135m", train=1500, cache=tmp_path / "cache", rounds=1)
    run = run_text(text, tmp_path / "s.yaml", tmp_path / "runs")
    check_every_export(run, tmp_path, "smollm2-135m", 2)
