"""Users by domain, pip-only: the Python standard library's own source, and its docstrings."""
from __future__ import annotations

import ast
import sys
import sysconfig
from pathlib import Path

from . import BuildContext, Built, SourceUnavailable

# Not hand-written library code: tests, generated tables, vendored or demo code, third parties.
EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__",
                 "encodings", "pydoc_data", "lib2to3", "turtledemo", "ensurepip", "__phello__"}


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    """The stdlib's *.py files in a deterministic order (sorted relative paths)."""
    root = stdlib_dir()
    files = [p for p in root.rglob("*.py")
             if not EXCLUDED_DIRS.intersection(p.relative_to(root).parts[:-1])]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _version() -> str:
    return ".".join(map(str, sys.version_info[:3]))


def build_code(ctx: BuildContext) -> Built:
    files = stdlib_files()
    if not files:
        raise SourceUnavailable(f"no *.py files under {stdlib_dir()}")
    docs = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    return Built([d for d in docs if d.strip()], origin=f"Python {_version()} stdlib *.py at {stdlib_dir()}")


def module_docstrings(source: str) -> str:
    """Module, class and function docstrings of one file, blank-line separated, in file order."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ""
    nodes = [tree, *(n for n in ast.walk(tree)
                     if isinstance(n, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)))]
    nodes.sort(key=lambda n: getattr(n, "lineno", 0))
    docs = (ast.get_docstring(n, clean=True) for n in nodes)
    return "\n\n".join(d for d in docs if d and len(d) > 20)


def build_docstrings(ctx: BuildContext) -> Built:
    files = stdlib_files()
    texts = [module_docstrings(p.read_text(encoding="utf-8", errors="replace")) for p in files]
    docs = [t for t in texts if len(t) >= 200]
    if not docs:
        raise SourceUnavailable(f"no docstrings found under {stdlib_dir()}")
    return Built(docs, origin=f"docstrings of the Python {_version()} stdlib at {stdlib_dir()}")
