"""What a run's numbers depend on beyond its scenario, recorded in summary.json ("environment").

Bit-identity holds for the same scenario, seed and executor on the same software and threads: the
torch build and its thread count change float reduction orders, a GPU and bf16 autocast change
every matmul. A run directory therefore names them, and the simfed source it ran (version and git
commit, with `dirty` when the working tree had uncommitted changes).
"""
from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from simfed import __version__


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def run_environment(device: torch.device, autocast: torch.dtype | None) -> dict[str, Any]:
    """The software, threads and hardware of this process, as JSON-able values."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "simfed_version": __version__,
        "git_commit": commit,
        "git_dirty": bool(status) if status is not None else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_version": torch.__version__,
        "torch_git": torch.version.git_version,
        "torch_cuda": torch.version.cuda,  # None on a CPU build
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": str(device),
        "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "precision": "bfloat16 autocast" if autocast == torch.bfloat16 else "float32",
        "transformers_version": _version("transformers"),
        "peft_version": _version("peft"),
    }
