"""The import graph of simfed has no cycle, and the engine and the learning never import each other.

Every `import` counts, also those inside functions (a lazy import still ties two modules together:
each needs the other to work) and those under TYPE_CHECKING (the types are part of the seam).
A package's `__init__` importing its own modules is containment, not an edge.
"""
from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "simfed"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """simfed module → the simfed modules it imports (packages' `__init__` stand for themselves)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level-1
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            # a package's __init__ naming its own modules (a registry of them) is containment, not a
            # dependency: the modules may import the package's shared names (simfed/data/sources)
            inside = path.name == "__init__.py"
            graph[name] |= {t for t in targets if t in modules and t != name
                            and not (inside and t.startswith(name + "."))}
    return graph


def test_the_graph_is_read_from_the_sources():
    graph = import_graph()
    assert "simfed.run.runner" in graph["simfed.cli"] or any("simfed.run" in t for t in graph["simfed.cli"])
    assert "simfed.learn.methods.base" in graph["simfed.learn.methods.adapter_method"]
    assert "simfed.sim.engine" in graph["simfed.run.simulate"]


def test_simfed_has_no_import_cycle():
    graph = import_graph()
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_the_engine_and_the_learning_never_import_each_other():
    graph = import_graph()
    crossings = [(a, b) for a, targets in graph.items() for b in targets
                 if (a.startswith("simfed.sim") and b.startswith("simfed.learn"))
                 or (a.startswith("simfed.learn") and b.startswith("simfed.sim"))]
    assert crossings == []


def test_a_cycle_would_be_found():
    """The check itself can fail: the old results ↔ plots pair is a cycle to graphlib."""
    graph = {"simfed.run.results": {"simfed.report.plots"}, "simfed.report.plots": {"simfed.run.results"}}
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError:
        return
    raise AssertionError("graphlib found no cycle in a two-module cycle")
