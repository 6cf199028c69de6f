"""In a perfect world the engine adds nothing: the paper's studies run under an ideal network.

Ideal network: fast links with no latency, no spread, no compute noise, no dropout, a deadline
that never fires, target = every device, no over-selection. Then every round must aggregate
every device, nothing straggles or drops, nothing is wasted — and the learning must be exactly
what a plain loop over (download → local update → aggregate) gives, with no simulator at all.
Also: the opt-in routing record (training.save_routing) and the routing figures from it.
"""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from simfed.config import load_scenario
from simfed.report.readers import read_metrics

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 3
SCENARIO = f"""
name: ideal_world
seeds: [0]
model: tiny-gpt2
data:
  users: [toy:a, toy:b, toy:a, toy:b]
  train_tokens: 3000
  val_tokens: 800
  test_tokens: 800
training:
  local_steps: 2
  batch_size: 2
  seq_len: 32
  eval_windows: 4
  save_routing: true
methods:
  - {{name: comigs, kind: comigs, variant: 1g1s, tau: 2, router_steps: 1}}
  - {{name: fedavg, kind: fedavg}}
world:
  fleet:
    - {{count: 2, tier: phone_flagship, link: wifi_home, down_mbps: 10000, up_mbps: 10000, latency_s: 0}}
    - {{count: 2, tier: phone_low, link: lte, down_mbps: 10000, up_mbps: 10000, latency_s: 0}}
  dropout: {{hazard_per_hour: 0}}
  compute_noise_sigma: 0
  device_spread_sigma: 0
  link_spread_sigma: 0
  server: {{rounds: {ROUNDS}, target_per_round: 4, over_selection: 1, deadline_s: 1.0e9}}
"""
N = 4


@pytest.fixture(scope="module")
def ideal(run_text, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ideal")
    run = run_text(SCENARIO, tmp / "ideal.yaml", tmp / "runs")
    return load_scenario(tmp / "ideal.yaml"), run


def events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def test_every_round_aggregates_every_device_and_nothing_is_lost(ideal):
    _, run = ideal
    ev = events(run)
    assert not {"dropped", "straggler", "stale"} & {e["kind"] for e in ev}
    summary = json.loads((run / "summary.json").read_text())["methods"]
    for method in ("comigs", "fedavg"):
        mine = [e for e in ev if e["method"] == method]
        aggregated = [e for e in mine if e["kind"] == "aggregated"]
        assert len(aggregated) == ROUNDS
        assert all(sorted(e["devices"]) == list(range(N)) for e in aggregated)
        assert sum(1 for e in mine if e["kind"] == "selected") == ROUNDS * N
        stats = summary[method]
        assert stats["updates_aggregated"] == stats["training_calls"] == ROUNDS * N
        assert stats["dropouts"] == stats["stragglers"] == 0
        assert stats["wasted_bytes"] == 0 and stats["wasted_compute_s"] == 0


def test_learning_equals_a_plain_loop_without_the_simulator(ideal):
    """The runner's per-device perplexities after every round = download/train/aggregate by hand."""
    from simfed.data.federated import build_federation
    from simfed.learn.adapters import AdaptedModel
    from simfed.learn.base_model import load_base_model
    from simfed.learn.methods.base import LocalPlan, Update
    from simfed.learn.methods.registry import build_method
    from simfed.learn.model_card import load_card
    from simfed.run.payload import travel
    from simfed.run.runner import clients_of
    from simfed.sim.fleet import build_fleet

    scenario, run = ideal
    seed, training = 0, scenario.training
    model = AdaptedModel(load_base_model(load_card(scenario.model), torch.device("cpu")))
    fleet = build_fleet(scenario.world, seed)
    users = build_federation(scenario.data, model.base.tokenizer, len(fleet), seed)
    rows = read_metrics(run)
    for spec in scenario.methods:
        method = build_method(spec, training, model)
        method.setup(clients_of(fleet, users), seed)
        for r in range(ROUNDS):
            received = {d: travel(method.download(d), training.payload_dtype) for d in range(N)}
            updates = []
            for d in range(N):
                u = method.local_update(d, received[d], LocalPlan(r, ROUNDS, seed))
                updates.append(Update(d, travel(u.upload, training.payload_dtype), u.n_tokens, u.train_loss, u.extra))
            method.aggregate(updates, r)
            for d in range(N):
                logged = next(x for x in rows if x["method"] == spec.name and x["round"] == r + 1 and x["device"] == str(d))
                assert math.isclose(method.evaluate(d, "test").ppl, logged["ppl"], rel_tol=1e-5), (spec.name, r, d)


def test_routing_jsonl_holds_valid_probabilities(ideal):
    _, run = ideal
    lines = [json.loads(line) for line in (run / "routing.jsonl").read_text().splitlines()]
    assert {x["method"] for x in lines} == {"comigs"}  # FedAvg has no router: nothing written
    assert sorted({x["round"] for x in lines}) == list(range(ROUNDS + 1))
    assert len(lines) == (ROUNDS + 1) * N
    for x in lines:
        assert len(x["generalist"]) == len(x["expert_mean"]) == 2  # tiny-gpt2: 2 layers
        for g, s, means, top1 in zip(x["generalist"], x["specialists"], x["expert_mean"], x["top1_share"]):
            assert 0.0 <= g <= 1.0 and math.isclose(g + s, 1.0)
            assert len(means) == 2 and all(0.0 <= m <= 1.0 for m in means)
            assert math.isclose(sum(means), 1.0, abs_tol=1e-6) and math.isclose(sum(top1), 1.0, abs_tol=1e-9)
        sample = x["sample"]
        assert len(sample["tokens"]) == len(sample["pieces"]) == 32
        assert all(len(layer) == 32 and set(layer) <= {0, 1} for layer in sample["top1"])
    # the routers move as training goes on: routing at the end differs from the fresh routers'
    first = [x for x in lines if x["round"] == 0 and x["device"] == 0][0]
    last = [x for x in lines if x["round"] == ROUNDS and x["device"] == 0][0]
    assert first["expert_mean"] != last["expert_mean"]


def test_routing_figures(ideal, tmp_path):
    _, run = ideal
    spec = importlib.util.spec_from_file_location("analysis_routing", ROOT / "analysis" / "routing.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main([str(run), "--out", str(tmp_path), "--by-device"]) == 0
    png = tmp_path / "routing_fig4.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "routing_tokens.html").read_text()
    assert page.count("comigs · device") == N and page.count('class="layer"') == N * 2
    assert module.main([str(tmp_path)]) == 2  # a folder without routing.jsonl
