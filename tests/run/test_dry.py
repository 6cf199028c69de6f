"""Dry mode: the same costs as the real methods, from the card's config alone; no training."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from simfed.config import load_scenario
from simfed.learn.adapters import AdaptedModel
from simfed.learn.base_model import load_base_model
from simfed.learn.flops import ModelDims
from simfed.learn.methods.base import Budget, ClientInfo
from simfed.learn.methods.registry import build_method
from simfed.learn.model_card import load_card
from simfed.learn.spec import TrainingSpec, method_spec
from simfed.run.dry import DryMethod, DryWorkload, dry_kinds, model_dims
from simfed.run.payload import shapes_bytes
from simfed.run.progress import ProgressView
from simfed.report.readers import read_metrics
from simfed.sim.accounting import Tally
from simfed.sim.fleet import build_fleet
from simfed.sim.spec import WorldSpec

TRAINING = TrainingSpec(local_steps=3, batch_size=2, seq_len=32, payload_dtype="bfloat16")
# budgets from weak phones to laptops: 1GXS expert counts and HetLoRA ranks both vary
WORLD = WorldSpec.model_validate({"fleet": [
    {"count": 4, "tier": tier, "link": "lte"} for tier in ("phone_low", "phone_mid", "phone_flagship", "laptop")
]})


@pytest.fixture(scope="module")
def tiny():
    card = load_card("tiny-gpt2")
    return card, AdaptedModel(load_base_model(card, "cpu"))


def test_dims_from_the_config_equal_the_loaded_model(tiny):
    card, model = tiny
    assert model_dims(card) == ModelDims.of(model)


# the dry kinds' specs: budgets must change the shape where the kind sizes by budget (1GXS, HetLoRA)
DRY_SPECS = {
    "comigs": method_spec(name="c", kind="comigs", variant="1gxs", rank=4, max_experts=4, tau=4, router_steps=2),
    "hetlora": method_spec(name="h", kind="hetlora", rank=4, min_rank=2, max_rank=16),
    "fedavg": method_spec(name="f", kind="fedavg", rank=4),
    "local": method_spec(name="l", kind="local", rank=4),
}


def test_the_dry_kinds_are_the_classes_that_declare_shape_costs():
    """Derived from the classes, not listed: these four today (a new one must get a DRY_SPECS entry)."""
    assert set(dry_kinds()) == {"comigs", "hetlora", "fedavg", "local"} == set(DRY_SPECS)


def test_a_kind_whose_class_has_no_shape_costs_is_refused_in_one_line():
    from simfed.errors import SimfedError

    dims = ModelDims(n_layers=1, d_model=4, d_attn=4, vocab=10, attn_linears=((4, 4),), mlp_up=((4, 8),), mlp_down=(8, 4))
    with pytest.raises(SimfedError) as info:
        DryMethod(method_spec(name="p", kind="pcl"), TRAINING, dims)
    assert str(info.value) == ("method 'p': dry mode supports comigs, hetlora, fedavg, local, not 'pcl' "
                               "(its class does not declare ShapeCosts)")


@pytest.mark.parametrize("kind", sorted(DRY_SPECS))
def test_dry_costs_equal_the_real_method(tiny, kind):
    """Bytes down/up, FLOPs, activation traffic and memory of every device, as the real method sets it up."""
    card, model = tiny
    spec = DRY_SPECS[kind]
    fleet = build_fleet(WORLD, seed=0)
    method = build_method(spec, TRAINING, model)
    method.setup([ClientInfo(d.device_id, Budget(float(d.memory_bytes), d.flops_per_s), None) for d in fleet], 0)
    dry = DryWorkload(DryMethod(spec, TRAINING, model_dims(card)), fleet, _Scenario(), 0, None, Tally())
    shapes = {dry.method.shape(d) for d in fleet}
    sized_by_budget = kind in ("comigs", "hetlora")
    assert (len(shapes) > 1) == sized_by_budget  # the budgets really differ where they matter
    for step in (0, 3, 6):  # the step counter decides when router phases come (tau = 4)
        for d in range(len(fleet)):
            if step:
                dry.steps[d] = step
                method.fed.store.get_or_create(d).global_step = step
            cost = dry.cost(d, 0)
            assert cost.download_bytes == shapes_bytes(method.download_shapes(d), "bfloat16")
            assert cost.upload_bytes == shapes_bytes(method.upload_shapes(d), "bfloat16")
            assert (cost.upload_bytes == 0) == (kind == "local")
            assert cost.flops == method.round_flops(d) > 0
            assert cost.activation_bytes == method.round_activation_bytes(d) > 0
            assert dry.memory_need(d) == method.memory_need(d)
    # the server's merge: a mean of the server's tensors over the merged updates, the same count
    everyone = list(range(len(fleet)))
    for merged in (everyone[:1], everyone[:3], everyone):
        flops = dry.aggregation_flops(merged)
        assert flops == method.aggregation_flops(merged) and (flops > 0) == (kind != "local")


class _Scenario:
    training = TRAINING


SCENARIO = """
name: dry_test
seeds: [0]
model: tiny-gpt2
data: {{users: [toy:a], cache_dir: {cache}}}
training: {{dry: true, local_steps: 2, batch_size: 2, seq_len: 32, eval_every: 2}}
methods:
  - {{name: comigs, kind: comigs, variant: 1gxs}}
  - {{name: hetlora, kind: hetlora}}
world:
  fleet:
    - {{count: 300, tier: phone_mid, link: lte, availability: {{kind: markov, mean_on_s: 3600, mean_off_s: 3600}}}}
    - {{count: 200, tier: laptop, link: wifi_home}}
  dropout: {{hazard_per_hour: 1000.0}}
  server: {{rounds: 5, target_per_round: 20, deadline_s: 120}}
"""


def test_a_dry_run_writes_events_and_summary_and_trains_nothing(tmp_path: Path, monkeypatch) -> None:
    import simfed.run.runner as runner

    def forbidden(*args, **kwargs):
        raise AssertionError("dry mode must not load the model, build the federation or train")

    for name in ("load_adapted_model", "build_federation", "build_method", "evaluate_pretrained"):
        monkeypatch.setattr(runner, name, forbidden)
    path = tmp_path / "dry.yaml"
    path.write_text(SCENARIO.format(cache=tmp_path / "cache"))
    scenario = load_scenario(path)
    with ProgressView([m.name for m in scenario.methods], 5, enabled=False) as view:
        run = Path(runner.run_scenario(scenario, tmp_path / "runs", scenario.seeds, [view]))
    summary = json.loads((run / "summary.json").read_text())
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert (run / "trace.json").exists()
    for method in ("comigs", "hetlora"):
        entry = summary["methods"][method]
        entry = entry.get("0", entry)
        assert entry["rounds"] == 5 and entry["training_calls"] == 0 and entry["bytes_up"] > 0
        mine = [e for e in events if e["method"] == method]
        assert sum(e["kind"] == "compute_end" for e in mine) >= 20
        assert sum(e["kind"] == "dropped" for e in mine) > 0
    rows = read_metrics(run)
    assert [r["round"] for r in rows if r["method"] == "comigs"] == [2, 4, 5]
    assert all(math.isnan(float(r["ppl"])) for r in rows)


def test_memory_policy_exclude_never_selects_devices_the_training_does_not_fit(tmp_path: Path, monkeypatch) -> None:
    """tiny-gpt2 CoMiGS 1G1S at batch 2 × 32 needs ~2.7 MB (simfed/learn/memory.py): a 1 MB user tier
    cannot hold it, a 1 GB one can."""
    from simfed.run.runner import run_scenario
    from simfed.sim.profiles import USER_PROFILES_ENV

    tiers = tmp_path / "tiers.yaml"
    row = "flops_per_s: 1.0e+10, joules_per_flop: 1.0e-10, sigma: 0.0, source: test"
    tiers.write_text(f"tiny_box: {{memory_gb: 0.001, {row}}}\nbig_box: {{memory_gb: 1, {row}}}\n")
    monkeypatch.setenv(USER_PROFILES_ENV, str(tiers))
    path = tmp_path / "dry.yaml"
    path.write_text(f"""
name: dry_memory
seeds: [0]
model: tiny-gpt2
data: {{users: [toy:a], cache_dir: {tmp_path / "cache"}}}
training: {{dry: true, local_steps: 2, batch_size: 2, seq_len: 32}}
methods: [{{name: comigs, kind: comigs}}]
world:
  memory_policy: exclude
  fleet:
    - {{count: 3, tier: tiny_box, link: lte}}
    - {{count: 3, tier: big_box, link: lte}}
  server: {{rounds: 2, target_per_round: 3, over_selection: 1.0, deadline_s: 600}}
""")
    scenario = load_scenario(path)
    with ProgressView(["comigs"], 2, enabled=False) as view:
        run = Path(run_scenario(scenario, tmp_path / "runs", scenario.seeds, [view]))
    summary = json.loads((run / "summary.json").read_text())
    entry = summary["methods"]["comigs"]
    entry = entry.get("0", entry)
    assert entry["memory_excluded"] == 3
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert {e["device"] for e in events if e["kind"] == "selected"} == {3, 4, 5}
