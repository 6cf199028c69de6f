"""Shared fixture of the runner tests: run a scenario given as YAML text, quietly, in process."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

RunText = Callable[..., Path]


@pytest.fixture(scope="session")
def run_text() -> RunText:
    """`run_text(yaml_text, path, out_root, resume=None) -> run directory`.

    Writes the scenario to `path`, loads it as the CLI would and runs it with the live view off.
    `run_scenario` is looked up on the runner module at call time, so tests may monkeypatch it.
    """

    def run(text: str, path: Path, out_root: Path, resume: Path | None = None) -> Path:
        from simfed.config import load_scenario
        from simfed.run import runner
        from simfed.run.progress import ProgressView

        path.write_text(text)
        scenario = load_scenario(path)
        extra = {"resume": resume} if resume is not None else {}
        names = [m.name for m in scenario.methods]
        with ProgressView(names, scenario.world.server.rounds, enabled=False) as view:
            return Path(runner.run_scenario(scenario, out_root, scenario.seeds, [view], **extra))

    return run


# The head of the tiny-GPT-2 scenarios the runner tests write (two toy users, two local steps of
# 2 × 32 tokens): each test adds its own methods and world after `methods:`. `{cache}` stays a
# format field (the test fills it with its tmp cache), so the rest of its text escapes braces.
TINY_GPT2_HEAD = """
name: {name}
seeds: [0]
model: {model}
data:
  users: [toy:a, toy:b]
  train_tokens: 3000
  val_tokens: 800
  test_tokens: 800
  cache_dir: {{cache}}
training:
{training}methods:
"""
TINY_RECIPE = {"local_steps": 2, "batch_size": 2, "seq_len": 32, "eval_windows": 4}


def tiny_gpt2_head(name: str, model: str = "tiny-gpt2", **training: object) -> str:
    """`TINY_GPT2_HEAD` for a scenario called `name`, with `{cache}` left to fill. `training` keys
    replace or add to `TINY_RECIPE`'s, written as given (a value "{dtype}" stays a format field,
    as may `model`)."""
    recipe = "".join(f"  {key}: {value}\n" for key, value in {**TINY_RECIPE, **training}.items())
    return TINY_GPT2_HEAD.format(name=name, model=model, training=recipe)
