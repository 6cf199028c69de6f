"""FedBuff through the runner on tiny-gpt2: after every merge the server's tensors equal the server
before it plus the staleness-weighted mean of (upload − what that device downloaded), recomputed
here from what the test saw each device download and upload."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from simfed.learn.aggregate import hetlora_weights, lora_modules, zero_pad_rank
from tests.run.conftest import tiny_gpt2_head

SCENARIO = tiny_gpt2_head("async_test", eval_every=10, eval_windows=2) + """\
  - {{name: comigs, kind: comigs, variant: 1g1s, tau: 2, router_steps: 1, server_lr: 0.5}}
  - {{name: hetlora, kind: hetlora, rank: 2, min_rank: 2, max_rank: 8}}
world:
  fleet:
    - {{count: 3, tier: phone_flagship, link: wifi_home}}
    - {{count: 3, tier: phone_low, link: lte, flops_per_s: 1.0e7}}
  dropout: {{hazard_per_hour: 0.0}}
  server: {{policy: fedbuff, rounds: 5, buffer_size: 2, concurrency: 5}}
"""


def test_fedbuff_merges_are_base_plus_staleness_weighted_deltas(run_text, tmp_path: Path, monkeypatch) -> None:
    import simfed.run.runner as runner

    merges: dict[str, list[dict]] = {}
    real_build = runner.build_method

    def build(spec, training, model):
        method = real_build(spec, training, model)
        downloaded, uploaded, log = {}, {}, merges.setdefault(spec.name, [])
        download, local_update, merge = method.download, method.local_update, method.aggregate_async

        def spy_download(client):
            payload = download(client)
            downloaded[client] = {k: v.clone() for k, v in payload.items()}
            return payload

        def spy_local_update(client, received, plan):
            update = local_update(client, received, plan)
            uploaded[client] = {k: v.clone() for k, v in update.upload.items()}
            return update

        def spy_merge(updates, bases, weights, round_index):
            before = {k: v.clone() for k, v in method.fed.server.items()}
            clients = [u.client for u in updates]
            merge(updates, bases, weights, round_index)
            log.append({"round": round_index, "clients": clients, "weights": list(weights), "before": before,
                        "after": {k: v.clone() for k, v in method.fed.server.items()},
                        "down": [downloaded[c] for c in clients], "up": [uploaded[c] for c in clients],
                        "max_rank": getattr(method, "max_rank", 0)})

        method.download, method.local_update, method.aggregate_async = spy_download, spy_local_update, spy_merge
        return method

    monkeypatch.setattr(runner, "build_method", build)
    run = run_text(SCENARIO.format(cache=tmp_path / "cache"), tmp_path / "async_test.yaml", tmp_path / "runs")

    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    for name in ("comigs", "hetlora"):
        aggregated = [e for e in events if e["method"] == name and e["kind"] == "aggregated"]
        log = merges[name]
        assert [m["round"] for m in log] == [e["round"] for e in aggregated] == list(range(5))
        assert [m["clients"] for m in log] == [e["devices"] for e in aggregated]
        assert any(s > 0 for e in aggregated for s in e["stalenesses"]), "some update must be stale"
        for m, e in zip(log, aggregated):
            assert len(m["clients"]) == 2  # buffer K = 2
            m["weights"] = e["weights"]  # the engine's 1/sqrt(1+s), not what the method was handed
            for name_, after in m["after"].items():
                expected = expected_tensor(name, name_, m)
                torch.testing.assert_close(after, expected.to(after.dtype), rtol=1e-5, atol=1e-6)
            assert any(not torch.equal(m["before"][k], m["after"][k]) for k in m["after"])
    ranks = {up[k].shape[0] for m in merges["hetlora"] for up in m["up"] for k in up
             if k.endswith("lora_A") and ".mlp." in k}
    assert len(ranks) > 1, f"the fleet should give HetLoRA several ranks, got {ranks}"


def expected_tensor(method: str, name: str, m: dict) -> torch.Tensor:
    before = m["before"][name].double()
    # CoMiGS, and HetLoRA's attention LoRA (rank 8 everywhere, averaged uniformly as in the reference):
    # uniform aggregation weights × staleness weights; server_lr 0.5 (CoMiGS) and 1 (HetLoRA)
    if method == "comigs" or ".mlp." not in name:
        carriers = [(up[name].double() - down[name].double(), w)
                    for up, down, w in zip(m["up"], m["down"], m["weights"]) if name in up]
        total = sum(w for _, w in carriers)
        server_lr = 0.5 if method == "comigs" else 1.0
        return before + server_lr * sum(w * d for d, w in carriers) / total
    # HetLoRA's MLP LoRA: rank-r deltas zero-padded to r_max, weights ‖B_i A_i‖ (of the uploads) × staleness
    module, which = name.rsplit(".", 1)
    assert module in lora_modules(m["up"][0])
    norm_a, norm_b = hetlora_weights(m["up"], module, "product")
    norms = norm_a if which == "lora_A" else norm_b
    total, step = 0.0, torch.zeros_like(before)
    for up, down, s, n in zip(m["up"], m["down"], m["weights"], norms):
        da = up[f"{module}.lora_A"].double() - down[f"{module}.lora_A"].double()
        db = up[f"{module}.lora_B"].double() - down[f"{module}.lora_B"].double()
        pa, pb = zero_pad_rank(da, db, m["max_rank"])
        step += n * s * (pa if which == "lora_A" else pb)
        total += n * s
    return before + step / total
