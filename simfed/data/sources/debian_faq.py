"""Users by domain, Q&A: the Debian FAQ (debian-faq HTML as text) and the Python FAQ (reST)."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from . import BuildContext, Built, SourceUnavailable, python_doc_package
from .python_docs import FAQ_DIR, rst_files, rst_sources

_BLOCKS = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd", "pre", "tr", "br",
           "table", "ul", "ol", "dl", "blockquote", "title"}


class _Text(HTMLParser):
    """HTML → text: block elements become paragraph breaks; head, scripts and styles are dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._pre = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "head"):
            self._skip += 1
        if tag == "pre":
            self._pre += 1
        if tag in _BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style", "head") and self._skip:
            self._skip -= 1
        if tag == "pre" and self._pre:
            self._pre -= 1
        if tag in _BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data if self._pre else re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    text = "".join(parser.parts)
    text = "\n".join(line.strip() for line in text.splitlines())
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _strip_navigation(html: str) -> str:
    """Debian's DocBook pages wrap the content in navheader/navfooter divs: cut them out."""
    return re.sub(r'<div class="nav(header|footer)">.*?</div>', "", html, flags=re.S)


def debian_faq_files(root: Path) -> list[Path]:
    return sorted((root / "usr/share/doc/debian/FAQ").glob("*.en.html"))


def build_faq(ctx: BuildContext) -> Built:
    docs: list[str] = []
    origins: list[str] = []
    problems: list[str] = []
    try:
        files = debian_faq_files(ctx.package("debian-faq"))
        docs += [html_to_text(_strip_navigation(p.read_text(encoding="utf-8", errors="replace"))) for p in files]
        origins.append(f"debian-faq ({len(files)} HTML pages)")
    except SourceUnavailable as exc:
        problems.append(str(exc))
    try:
        pkg = python_doc_package()
        files = rst_files(rst_sources(ctx.package(pkg)), only=FAQ_DIR)
        docs += [p.read_text(encoding="utf-8", errors="replace") for p in files]
        origins.append(f"{pkg} _sources/faq ({len(files)} files)")
    except SourceUnavailable as exc:
        problems.append(str(exc))
    docs = [d for d in docs if len(d) >= 200]
    if not docs:
        raise SourceUnavailable("; ".join(problems) or "no FAQ text found")
    return Built(docs, origin=" + ".join(origins) + " via apt-get download",
                 fallback=("partial: " + "; ".join(problems)) if problems else None)
