"""A method from outside simfed (examples/my_method: FedProx on LoRA) runs from a scenario next to CoMiGS."""
from __future__ import annotations

from pathlib import Path

import pytest

from simfed.report.readers import read_metrics

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "my_method"

@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory) -> Path:
    """examples/my_method/scenario.yaml as shipped (2 rounds instead of 3), the example on sys.path."""
    from simfed.config import load_scenario
    from simfed.run import runner
    from simfed.run.progress import ProgressView

    tmp = tmp_path_factory.mktemp("plugin")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(EXAMPLE))
        scenario = load_scenario(EXAMPLE / "scenario.yaml", [f"data.cache_dir={tmp / 'cache'}", "world.server.rounds=2"])
        with ProgressView([m.name for m in scenario.methods], 2, enabled=False) as view:
            return Path(runner.run_scenario(scenario, tmp / "runs", scenario.seeds, [view]))


def _by_method(run: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in read_metrics(run):
        if row["device"] == "mean":
            out.setdefault(row["method"], []).append(row)
    return out


def test_fedprox_with_mu_zero_is_fedavg_bit_for_bit(plugin_run: Path) -> None:
    """μ = 0 adds 0·‖θ − θ_t‖² to the loss: the same gradients, so FedAvg's exact metrics (FedAvg
    here weighs devices uniformly, as `aggregation_weights: uniform` asks of FedProx). Simulated
    time is not compared: FedProx's rounds cost the proximal term's FLOPs too (next test)."""
    rows = _by_method(plugin_run)
    assert set(rows) == {"comigs", "fedavg", "fedprox", "fedprox-mu0"}
    keys = ("round", "ppl", "acc", "bytes_up", "bytes_down")
    assert [[r[k] for k in keys] for r in rows["fedprox-mu0"]] == [[r[k] for k in keys] for r in rows["fedavg"]]
    assert rows["fedprox-mu0"][-1]["sim_time_s"] > rows["fedavg"][-1]["sim_time_s"]


def test_fedprox_with_mu_moves_the_model_but_not_the_bytes(plugin_run: Path) -> None:
    rows = _by_method(plugin_run)
    last = {m: r[-1] for m, r in rows.items()}
    assert last["fedprox"]["ppl"] != last["fedavg"]["ppl"]  # the proximal term changes training
    # every LoRA tensor travels: 16,384 parameters (next test) × 4 bytes (float32) an upload
    assert last["fedprox"]["bytes_up"] == last["fedavg"]["bytes_up"]
    assert last["fedprox"]["bytes_up"] > 0 and last["fedprox"]["bytes_up"] % (16_384 * 4) == 0


def test_fedprox_counts_its_proximal_flops(plugin_run: Path) -> None:
    """tiny-gpt2 (2 layers, d 64, fused qkv 64→192, out 64→64, MLP 64→256→64) at rank 8:
    LoRA parameters per layer r·(in+out) = 8·(256 + 128 + 320 + 320) = 8192, 16384 in all; the
    term costs 5 FLOPs a parameter and step, 2 steps a round: 163,840 FLOPs more than FedAvg."""
    from simfed.run.trace import read_events

    def flops(method: str) -> set[float]:
        return {e["planned_flops"] for e in read_events(plugin_run)
                if e["method"] == method and e["kind"] == "compute_start"}

    extra = {round(b - a) for a in flops("fedavg") for b in flops("fedprox-mu0")}
    assert extra == {163_840}


def test_an_entry_point_name_finds_the_same_class(tmp_path, monkeypatch) -> None:
    """A distribution registering `fedprox` under `simfed.methods` (a dist-info on sys.path, as
    `pip install examples/my_method` writes one) makes `kind: fedprox` work."""
    from simfed.learn.methods.registry import method_class

    dist = tmp_path / "simfed_my_method-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: simfed-my-method\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text('[simfed.methods]\nfedprox = my_method:FedProx\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    cls = method_class("fedprox")
    assert cls.__name__ == "FedProx" and cls.__module__ == "my_method"
