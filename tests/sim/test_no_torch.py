"""simfed.sim never imports torch: the engine stays testable in milliseconds."""
from __future__ import annotations

import subprocess
import sys


def test_the_sim_package_imports_without_torch():
    code = ("import sys, pkgutil, importlib, simfed.sim as s\n"
            "[importlib.import_module('simfed.sim.' + m.name) for m in pkgutil.iter_modules(s.__path__)]\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
