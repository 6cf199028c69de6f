"""simfed from Python: run a scenario, read a run, take a device's model out.

    import simfed
    result = simfed.run("scenarios/tiny_smoke.yaml")      # or a dict, or a Scenario
    result.metrics                                          # pandas DataFrame of metrics.csv
    result.final()                                          # one row per method: the last mean row
    model = simfed.load_device_model(result.path, "fedavg", device=0)   # a transformers model

`run` is the same recipe as `simfed run` (simfed/run/runner.py), with the live view off unless
asked: a dict scenario gives the same metrics.csv as the YAML file it came from.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from simfed.errors import SimfedError


def _scenario(scenario: Any, overrides: Sequence[str] = ()):
    """A validated `Scenario` from a path, a mapping or a Scenario."""
    from simfed.config import Scenario, load_document, load_scenario

    if isinstance(scenario, Scenario):
        if overrides:
            raise SimfedError("simfed.run: overrides apply to a path or a dict, not to a built Scenario")
        return scenario
    if isinstance(scenario, (str, Path)):
        return load_scenario(scenario, overrides)
    if isinstance(scenario, Mapping):
        import tempfile

        import yaml

        name = str(scenario.get("name", "scenario"))
        with tempfile.TemporaryDirectory() as tmp:  # the YAML path keeps file:line errors for dicts too
            path = Path(tmp) / f"{name}.yaml"
            path.write_text(yaml.safe_dump(dict(scenario), sort_keys=False), encoding="utf-8")
            return load_document(path, Scenario, overrides, defaults={"name": name})
    raise SimfedError(f"simfed.run: a scenario is a path, a dict or a Scenario, not {type(scenario).__name__}")


def run(scenario: Any, *, out: str | Path | None = None, seeds: Sequence[int] | None = None,
        overrides: Sequence[str] = (), progress: bool = False, observers: Sequence[Any] = ()):
    """Run every method of `scenario` for every seed; returns a `RunResult` over the run directory.

    `scenario`: a YAML path, a dict of the same keys, or a `simfed.config.Scenario`; `out`: the
    root of run directories (default the scenario's output.dir); `overrides`: `--set` strings;
    `progress`: True shows `simfed run`'s view (live on a terminal, a line per round otherwise),
    False runs silently; `observers`: objects that watch the run as it goes, each with
    `observer(method, seed)` and `close()` (simfed/run/observers.py; the caller closes them)."""
    from contextlib import ExitStack

    from simfed.report.readers import RunResult
    from simfed.run.progress import ProgressView
    from simfed.run.runner import run_scenario

    spec = _scenario(scenario, overrides)
    chosen = list(seeds) if seeds is not None else list(spec.seeds)
    with ExitStack() as stack:
        view = [stack.enter_context(ProgressView([m.name for m in spec.methods], spec.world.server.rounds))] if progress else []
        path = run_scenario(spec, Path(out) if out is not None else None, chosen, [*view, *observers])
    return RunResult(Path(path))


def load_run(run_dir: str | Path):
    """A finished (or interrupted) run directory as a `RunResult`."""
    from simfed.report.readers import RunResult

    path = Path(run_dir)
    if not (path / "metrics.csv").is_file():
        raise SimfedError(f"{path}: not a run directory (no metrics.csv)")
    return RunResult(path)


# ---------------------------------------------------------------- models out of a run

def _saved_path(run_dir: Path, method: str, device: int, seed: int | None, tag: str) -> Path:
    from simfed.learn.export import DEVICE_FILE
    from simfed.run.saved_models import MODELS_DIR, models_dir

    root = run_dir / MODELS_DIR / method
    if not root.is_dir():
        have = sorted(p.name for p in (run_dir / MODELS_DIR).iterdir()) if (run_dir / MODELS_DIR).is_dir() else []
        raise SimfedError(f"{run_dir}: no saved models of method '{method}' (saved: {', '.join(have) or 'none'}; "
                          "run with output.save_models: final)")
    if seed is None:
        seed = min(int(p.name[len("seed"):]) for p in root.iterdir() if p.name.startswith("seed"))
    path = models_dir(run_dir, method, seed, tag) / DEVICE_FILE.format(device=device)
    if not path.is_file():
        raise SimfedError(f"{path}: no such saved device model")
    return path


def _card_of(run_dir: Path):
    from simfed.config import load_scenario
    from simfed.learn.model_card import load_card

    scenario = load_scenario(run_dir / "scenario.resolved.yaml")
    return scenario, load_card(scenario.model)


def _base_id(card) -> str:
    """What adapter_config.json names as the base: the hub id or directory, else the card's name."""
    return card.source.id if card.source.kind == "pretrained" and card.source.id else card.name


def load_device_model(run_dir: str | Path, method: str, device: int, seed: int | None = None,
                      tag: str = "final", on: str = "cpu"):
    """The transformers model of one device of a run (any method with adapters, mixtures included),
    as simfed evaluated it: call it for logits, or `.generate(...)`. Needs output.save_models."""
    from simfed.learn.adapters import AdaptedModel
    from simfed.learn.base_model import load_base_model
    from simfed.learn.export import attach_device, load_device

    run_dir = Path(run_dir)
    saved = load_device(_saved_path(run_dir, method, device, seed, tag))
    _, card = _card_of(run_dir)
    base = load_base_model(card, on)
    return attach_device(AdaptedModel(base), saved)


def export(run_dir: str | Path, method: str, out: str | Path, device: int | None = None, seed: int | None = None,
           merged: bool = False, tag: str = "final") -> list[Path]:
    """Write PEFT adapter folders for one device (`out` itself) or every device (`out/device-<d>/`).

    A single-LoRA device becomes one adapter folder (with `merged`: also `merged/`, the base with
    the adapter merged in); a mixture device `attention/`, `expert_<e>/`, router.safetensors and
    mixture.json (simfed/learn/export.py). Returns the folders written."""
    from simfed.learn.base_model import load_base_model
    from simfed.learn.export import load_device, write_mixture, write_peft_adapter

    run_dir, out = Path(run_dir), Path(out)
    scenario, card = _card_of(run_dir)
    devices = [device] if device is not None else list(range(scenario.world.n_devices))
    base = load_base_model(card, "cpu")  # unwrapped: peft injects into copies of it
    tokenizer = getattr(base.tokenizer, "tokenizer", None)  # an HF tokenizer (byte tokenizers have no files)
    written = []
    for d in devices:
        saved = load_device(_saved_path(run_dir, method, d, seed, tag))
        folder = out if device is not None else out / f"device-{d}"
        folder.mkdir(parents=True, exist_ok=True)
        if saved.shape.n_experts == 1:
            write_peft_adapter(card, saved, base.model, folder, _base_id(card), merged, tokenizer)
        else:
            if merged:
                raise SimfedError(f"{method}: device {d} is a mixture with a router: it has no merged form "
                                  "(export without --merged; simfed.load_device_model loads it)")
            write_mixture(card, saved, base.model, folder, _base_id(card))
        written.append(folder)
    return written
