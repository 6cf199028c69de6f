"""Fetch Debian packages without installing them: `apt-get download` + `dpkg-deb -x` into a folder."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _last_error(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.startswith(("E:", "W:"))]
    errors = [ln for ln in lines if ln.startswith("E:")] or lines or ["exit status %d" % proc.returncode]
    return errors[-1][:200]


def apt_missing_reason() -> str | None:
    """None when apt-get and dpkg-deb are usable, else why not."""
    missing = [tool for tool in ("apt-get", "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not found (not a Debian/Ubuntu machine?)"
    return None


def fetch_packages(
    packages: list[str], dest: Path, log: Callable[[str], None]
) -> tuple[dict[str, Path], dict[str, str]]:
    """Download `packages` into `dest` and unpack each into `dest/<package>/`.

    Returns ({package: unpacked root}, {package: why it failed}). One `apt-get download` call for
    all; on failure, `apt-get update` once (root only; a fresh container has no package lists)
    and retry, then package by package so one missing package does not sink the rest.
    """
    reason = apt_missing_reason()
    if reason:
        return {}, dict.fromkeys(packages, reason)
    dest.mkdir(parents=True, exist_ok=True)
    os.chmod(dest, 0o755)  # apt's sandbox user `_apt` must be able to write here
    debs_dir = dest / "debs"
    debs_dir.mkdir(exist_ok=True)
    os.chmod(debs_dir, 0o777)
    proc = _run(["apt-get", "download", *packages], cwd=debs_dir)
    if proc.returncode != 0 and os.geteuid() == 0:
        log(f"  apt-get download failed ({_last_error(proc)}); running apt-get update")
        upd = _run(["apt-get", "update"], timeout=900)
        if upd.returncode != 0:
            log(f"  apt-get update failed: {_last_error(upd)}")
        proc = _run(["apt-get", "download", *packages], cwd=debs_dir)
    failed: dict[str, str] = {}
    if proc.returncode != 0:
        for pkg in packages:
            one = _run(["apt-get", "download", pkg], cwd=debs_dir)
            if one.returncode != 0:
                failed[pkg] = f"apt-get download {pkg}: {_last_error(one)}"
    roots: dict[str, Path] = {}
    for pkg in packages:
        if pkg in failed:
            continue
        debs = sorted(debs_dir.glob(f"{pkg}_*.deb"))
        if not debs:
            failed[pkg] = f"apt-get download {pkg} left no .deb"
            continue
        root = dest / pkg
        unpack = _run(["dpkg-deb", "-x", str(debs[-1]), str(root)])
        if unpack.returncode != 0:
            failed[pkg] = f"dpkg-deb -x {debs[-1].name}: {unpack.stderr.strip()[:200]}"
            continue
        roots[pkg] = root
    return roots, failed
