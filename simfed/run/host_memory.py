"""The training process keeps the heap memory it frees, for the next step, instead of returning it.

Why. On glibc, `free` hands memory back to the kernel as soon as the free space at the top of the
heap passes a trim threshold (a dynamic one, at most 64 MiB), and a block above the mmap threshold
(at most 32 MiB) is unmapped at every free. A training step frees its activations at the end of its
backward and allocates them again in the next forward; a batched step of K devices frees about K
times a sequential step's. So the heap shrank and grew at every batched step, and the kernel faulted
the pages in again, zeroed, one 4 KiB page at a time: measured on an AMD EPYC (2 threads), a
batched HetLoRA round of 8 devices of SmolLM2 took 350-515 thousand page faults and 3-5 s of
system time in a 24-26 s round; a sequential round took none. With trimming off and the mmap
threshold fixed at its largest, the same round takes no faults after the first, as the sequential
ones did (`bench/batched.py` gives the figures).

What it costs: memory freed is kept for reuse, so the process's resident size stays at its high
water mark instead of falling back between steps. The peak, which the run reports, is the same.
Numbers are unchanged: only where the allocator takes memory from changes.

Set once per training process (the runner, each Ray worker, calibration), as torch's thread count
is. Left alone where the C library is not glibc, and where the user set glibc's own malloc
settings (`MALLOC_TRIM_THRESHOLD_`, `MALLOC_MMAP_THRESHOLD_`, or `glibc.malloc` tunables): theirs
win. The alternative, an allocator preloaded (jemalloc, tcmalloc: PyTorch's CPU tuning guide),
needs a library the machine may lack and a preload before Python starts.
"""
from __future__ import annotations

import ctypes
import os
import platform
from typing import Mapping

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest: HEAP_MAX_SIZE / 2 on a 64-bit build
TRIM_OFF = -1  # mallopt(M_TRIM_THRESHOLD, -1): never trim (man 3 mallopt)
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def _user_set_malloc(environ: Mapping[str, str]) -> str | None:
    for name in USER_SETTINGS:
        if name in environ:
            return name
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    return None


def keep_freed_memory(environ: Mapping[str, str] = os.environ) -> str:
    """Turn glibc's heap trimming off and fix its mmap threshold at 32 MiB, for this process.

    Returns what was done, in words, for the run's summary.json (`environment.malloc`)."""
    family, version = platform.libc_ver()
    if family != "glibc":
        return f"left as it is (the C library is {family or 'not glibc'})"
    user = _user_set_malloc(environ)
    if user is not None:
        return f"left as the user set it ({user})"
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim_off = libc.mallopt(M_TRIM_THRESHOLD, TRIM_OFF) == 1
        mmap_fixed = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    except (OSError, AttributeError) as err:
        return f"left as it is (mallopt unavailable: {err})"
    trim = "trimming off" if trim_off else "trimming as it was (mallopt refused)"
    mmap = f"mmap threshold {MMAP_THRESHOLD_BYTES >> 20} MiB" if mmap_fixed else "mmap threshold as it was (mallopt refused)"
    return f"glibc {version}: {trim}, {mmap}" + (" (freed memory kept for reuse)" if trim_off else "")
