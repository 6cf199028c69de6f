"""Users by language: Debian's (translated) man pages rendered with groff, filtered per paragraph."""
from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import BuildContext, Built, SourceUnavailable
from .language import keep_language

PACKAGES = {  # language -> Debian package (GPL-3+ manpages-l10n; `manpages` is GPL-2+ English)
    "de": "manpages-de",
    "fr": "manpages-fr",
    "it": "manpages-it",
    "nl": "manpages-nl",
    "es": "manpages-es",
    "en": "manpages",
}
# -k: preconv for the page's encoding; -P-cbou: no SGR, bold, overstrike or underline;
# LL=2000n: one paragraph = one line (no hard wraps); HY=0: no hyphenation.
GROFF_ARGS = ["-man", "-Tutf8", "-k", "-P-cbou", "-rLL=2000n", "-rHY=0"]
MIN_PAGE_CHARS = 200  # after filtering; shorter leftovers (a name line and a heading) are dropped


def page_files(root: Path, lang: str) -> list[Path]:
    """The package's man pages in a fixed order; symlinks (aliases) are skipped."""
    base = root / "usr/share/man" / ("" if lang == "en" else lang)
    return sorted(p for p in base.glob("man*/*") if p.is_file() and not p.is_symlink())


def _read_source(path: Path) -> str:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8", errors="replace")


def is_alias(source: str) -> bool:
    """A page that only includes another (`.so man1/foo.1`), not counting comments."""
    lines = [ln for ln in source.splitlines() if ln.strip() and not ln.startswith(('.\\"', "'\\\""))]
    return len(lines) <= 2 and any(ln.startswith(".so ") for ln in lines)


def render(source: str) -> str:
    """groff's text of one page without the header and footer lines, lines left-stripped."""
    proc = subprocess.run(["groff", *GROFF_ARGS], input=source.encode("utf-8"),
                          capture_output=True, timeout=120)
    lines = proc.stdout.decode("utf-8", errors="replace").splitlines()[1:-1]
    text = "\n".join(ln.strip() for ln in lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def page_text(path: Path, lang: str) -> str | None:
    source = _read_source(path)
    if is_alias(source):
        return None
    text = keep_language(render(source), lang)
    return text if len(text) >= MIN_PAGE_CHARS else None


def build_language(ctx: BuildContext, lang: str) -> Built:
    if shutil.which("groff") is None:
        raise SourceUnavailable("groff is not installed (apt-get install groff-base); man pages cannot be rendered")
    pkg = PACKAGES[lang]
    root = ctx.package(pkg)
    pages = page_files(root, lang)
    if not pages:
        raise SourceUnavailable(f"{pkg} holds no man pages under usr/share/man/{lang}")
    workers = max(1, min(8, (os.cpu_count() or 1)))
    with ThreadPoolExecutor(workers) as pool:  # groff runs in subprocesses: threads suffice
        texts = list(pool.map(lambda p: page_text(p, lang), pages))
    docs = [t for t in texts if t]
    ctx.log(f"  {lang}: {len(pages)} pages, {len(docs)} kept after the {lang} paragraph filter")
    return Built(docs, origin=f"{pkg} via apt-get download, groff {' '.join(GROFF_ARGS)}")
