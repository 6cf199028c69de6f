"""The training process keeps its freed heap (simfed/run/host_memory.py).

The behaviour is measured, not the call: a child process frees 192 MiB in 4 MiB blocks (a step's
activations, in size) and allocates them again; with glibc's defaults every page of the third
cycle is faulted in afresh (trimmed or unmapped at the free), after `keep_freed_memory` none is.
"""
from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from simfed.run.host_memory import keep_freed_memory

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

CYCLES = textwrap.dedent("""
    import ctypes, resource, sys
    if sys.argv[1] == "keep":
        from simfed.run.host_memory import keep_freed_memory
        print(keep_freed_memory({}), file=sys.stderr)
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    BLOCK, BLOCKS = 4 << 20, 48  # 4 MiB x 48 = 192 MiB
    faults = []
    for cycle in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [libc.malloc(BLOCK) for _ in range(BLOCKS)]
        for b in blocks:
            ctypes.memset(b, 1, BLOCK)  # touch every page, as a forward writes its activations
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        for b in blocks:
            libc.free(b)
    print(faults[-1])
""")
ROOT = Path(__file__).resolve().parents[2]  # the checkout, where `simfed` imports from
PAGES = (4 << 20) * 48 // 4096  # pages the blocks span: 49152


def third_cycle_faults(mode: str) -> int:
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_* of the caller's
    done = subprocess.run([sys.executable, "-c", CYCLES, mode], capture_output=True, text=True, env=env,
                          check=True, cwd=str(ROOT))
    return int(done.stdout.strip())


@glibc_only
def test_freed_memory_is_reused_without_faulting_it_in_again():
    default = third_cycle_faults("default")
    kept = third_cycle_faults("keep")
    assert default >= 0.9 * PAGES  # glibc's defaults give the pages back: the test can fail
    assert kept <= 0.02 * PAGES


@glibc_only
def test_it_says_what_it_set():
    said = keep_freed_memory({})
    assert said.startswith(f"glibc {platform.libc_ver()[1]}") and "trimming off" in said and "32 MiB" in said


def test_the_users_own_malloc_settings_win(monkeypatch):
    calls = []
    monkeypatch.setattr("ctypes.CDLL", lambda *a, **k: calls.append(a))
    for environ, named in [({"MALLOC_TRIM_THRESHOLD_": "0"}, "MALLOC_TRIM_THRESHOLD_"),
                           ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, "GLIBC_TUNABLES")]:
        expected = (f"left as the user set it ({named})" if platform.libc_ver()[0] == "glibc"
                    else f"left as it is (the C library is {platform.libc_ver()[0] or 'not glibc'})")
        assert keep_freed_memory(environ) == expected
    assert calls == []  # mallopt never called
