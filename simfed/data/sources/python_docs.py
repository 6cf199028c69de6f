"""Users by domain: the Python reference documentation (reST sources of python3.X-doc)."""
from __future__ import annotations

from pathlib import Path

from . import BuildContext, Built, SourceUnavailable, python_doc_package
from .python_stdlib import build_docstrings

FAQ_DIR = "faq"  # the Python FAQ goes to the `faq` source, so `docs` and `faq` stay disjoint


def rst_sources(root: Path) -> Path:
    """The `_sources` folder of an unpacked python3.X-doc package."""
    found = sorted(root.glob("usr/share/doc/python3*/html/_sources"))
    if not found:
        raise SourceUnavailable(f"no usr/share/doc/python3*/html/_sources in {root.name}")
    return found[0]


def rst_files(sources: Path, only: str | None = None, exclude: str | None = None) -> list[Path]:
    files = sorted(sources.rglob("*.rst.txt"), key=lambda p: p.relative_to(sources).as_posix())
    if only is not None:
        files = [p for p in files if p.relative_to(sources).parts[0] == only]
    if exclude is not None:
        files = [p for p in files if p.relative_to(sources).parts[0] != exclude]
    return files


def build_docs(ctx: BuildContext) -> Built:
    pkg = python_doc_package()
    try:
        sources = rst_sources(ctx.package(pkg))
    except SourceUnavailable as exc:
        fallback = build_docstrings(ctx)
        return Built(fallback.documents, fallback.origin, fallback=f"{exc}; used stdlib docstrings instead")
    docs = [p.read_text(encoding="utf-8", errors="replace") for p in rst_files(sources, exclude=FAQ_DIR)]
    return Built([d for d in docs if d.strip()], origin=f"{pkg} _sources/**/*.rst.txt (without faq/) via apt-get download")
