"""Per-kind method specs: a key of another kind, or an unknown kind, is one line naming key, file and line."""
from __future__ import annotations

from pathlib import Path

import pytest

from simfed.config import ScenarioError, load_scenario

MINIMAL = Path(__file__).with_name("minimal.yaml")


def _with_methods(tmp_path: Path, methods: str) -> tuple[Path, list[str]]:
    text = MINIMAL.read_text()
    head, rest = text.split("methods:\n", 1)
    tail = rest[rest.index("world:"):]
    path = tmp_path / "s.yaml"
    path.write_text(head + "methods:\n" + methods + tail)
    return path, path.read_text().splitlines()


def test_a_key_of_another_kind_is_an_error_at_its_line(tmp_path):
    path, lines = _with_methods(tmp_path, "  - name: avg\n    kind: fedavg\n    prune_lambda: 0.1\n")
    line = lines.index("    prune_lambda: 0.1") + 1
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.problems == [
        f"{path}:{line}: methods.0.prune_lambda: unknown key for kind 'fedavg' (a key of hetlora)"]


def test_a_key_shared_by_some_kinds_names_them_all(tmp_path):
    path, lines = _with_methods(tmp_path, "  - {name: p, kind: pretrained, rank: 4}\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    (problem,) = info.value.problems
    line = next(i for i, t in enumerate(lines, 1) if "kind: pretrained" in t)
    assert problem.startswith(f"{path}:{line}: methods.0.rank: unknown key for kind 'pretrained' (a key of comigs, ")


@pytest.mark.parametrize("kind, message", [
    ("fedsgd", "unknown method kind 'fedsgd' (expected one of: comigs,"),
    ("no_such_pkg.mod:Cls", "cannot import 'no_such_pkg.mod'"),  # a plugin path that does not import
])
def test_an_unknown_kind_is_one_line_at_the_kind(tmp_path, kind, message):
    path, lines = _with_methods(tmp_path, f"  - name: x\n    kind: {kind}\n")
    line = lines.index(f"    kind: {kind}") + 1
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}:{line}: methods.0.kind: {message}")


def test_the_keys_each_kind_keeps(tmp_path):
    """The right key on the right kind still loads, and keeps its value."""
    path, _ = _with_methods(tmp_path, "  - {name: h, kind: hetlora, prune_lambda: 0.1}\n"
                                      "  - {name: c, kind: comigs, variant: 2s, tau: 3}\n")
    h, c = load_scenario(path).methods
    assert (h.prune_lambda, c.variant, c.tau) == (0.1, "2s", 3)
    assert not hasattr(h, "tau") and not hasattr(c, "prune_lambda")


def test_a_set_override_of_another_kinds_key_names_the_override():
    with pytest.raises(ScenarioError) as info:
        load_scenario(MINIMAL, ["methods.0.prune_gamma=0.5"])  # methods.0 is comigs
    assert info.value.problems == [
        "--set methods.0.prune_gamma=0.5: unknown key for kind 'comigs' (a key of hetlora)"]


def test_the_resolved_yaml_of_per_kind_specs_round_trips(tmp_path):
    s = load_scenario(MINIMAL)
    again = tmp_path / "again.yaml"
    again.write_text(s.resolved_yaml())
    assert load_scenario(again).methods == s.methods
    assert "prune_lambda" not in s.resolved_yaml().split("name: hetlora")[0]  # the comigs item has none
