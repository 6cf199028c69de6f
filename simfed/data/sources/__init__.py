"""Builders of the built-in corpora, one module a family; the registry maps source names to them."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


class SourceUnavailable(RuntimeError):
    """A source (or a package it needs) cannot be had on this machine; the message says why."""


@dataclass
class BuildContext:
    """What a builder may use: unpacked Debian packages, a scratch folder, a logger."""

    scratch: Path
    log: Callable[[str], None]
    package_roots: dict[str, Path] = field(default_factory=dict)
    package_errors: dict[str, str] = field(default_factory=dict)

    def package(self, name: str) -> Path:
        """The unpacked root of Debian package `name`, or SourceUnavailable with the reason."""
        if name in self.package_roots:
            return self.package_roots[name]
        raise SourceUnavailable(self.package_errors.get(name, f"package {name} was not fetched"))


@dataclass(frozen=True)
class Built:
    """A built source: its documents in a fixed order, and where they came from."""

    documents: list[str]
    origin: str  # e.g. "manpages-de 4.18.1 via apt" — recorded in the cache's meta.json
    fallback: str | None = None  # set when a pip-only substitute was used: why


def python_doc_package() -> str:
    """The Debian package of the running Python's docs, e.g. `python3.11-doc`."""
    return f"python{sys.version_info.major}.{sys.version_info.minor}-doc"


@dataclass(frozen=True)
class Recipe:
    packages: tuple[str, ...]  # Debian packages to fetch first (may be empty)
    build: Callable[[BuildContext], Built]


def recipes() -> dict[str, Recipe]:
    """Built-in source name -> how to build it (imports the builders lazily)."""
    from . import debian_faq, manpages, python_docs, python_stdlib, shakespeare

    table = {
        lang: Recipe((pkg,), (lambda ctx, lang=lang: manpages.build_language(ctx, lang)))
        for lang, pkg in manpages.PACKAGES.items()
    }
    doc = python_doc_package()
    table["code"] = Recipe((), python_stdlib.build_code)
    table["docstrings"] = Recipe((), python_stdlib.build_docstrings)
    table["docs"] = Recipe((doc,), python_docs.build_docs)
    table["faq"] = Recipe(("debian-faq", doc), debian_faq.build_faq)
    table["shakespeare"] = Recipe((), shakespeare.build_shakespeare)
    return table
