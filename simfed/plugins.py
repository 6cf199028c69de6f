"""Code from outside simfed, named in a scenario: `package.module:Name`, or an entry-point name.

A scenario may name a method (`methods[].kind`) or an observer (`output.observers`) that simfed
does not ship. Two spellings, as Python packaging knows them: an import path `package.module:Name`
(the module must be importable: installed, or on PYTHONPATH), or a name a distribution registers
under an entry-point group (`simfed.methods`, `simfed.observers`) in its pyproject.toml:

    [project.entry-points."simfed.methods"]
    fedprox = "my_method:FedProx"
"""
from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from simfed.errors import SimfedError

METHODS_GROUP = "simfed.methods"
OBSERVERS_GROUP = "simfed.observers"


class PluginError(SimfedError):
    """A named plugin cannot be found or imported."""


def is_import_path(ref: str) -> bool:
    module, sep, name = ref.partition(":")
    return bool(sep and module and name)


def registered(group: str) -> list[str]:
    """The names installed distributions register under `group`."""
    return sorted({ep.name for ep in entry_points(group=group)})


def load_object(ref: str, group: str) -> Any:
    """The object `ref` names: `package.module:Name` (dots after the colon walk attributes), or
    the entry point `ref` of `group`. PluginError (one line) when it is not there."""
    if is_import_path(ref):
        module_name, _, attr = ref.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise PluginError(f"cannot import {module_name!r} for {ref!r}: {exc}") from None
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise PluginError(f"{module_name!r} has no {attr!r} (from {ref!r})")
            obj = getattr(obj, part)
        return obj
    found = [ep for ep in entry_points(group=group) if ep.name == ref]
    if not found:
        raise PluginError(f"no {group!r} entry point named {ref!r}")
    try:
        return found[0].load()
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"entry point {ref!r} of {group!r} ({found[0].value}) does not load: {exc}") from None
