"""The registry from a scenario's `kind` to a method class, derived from the classes themselves.

Built-in kinds are the spec classes of `simfed.learn.spec` (`BUILTIN_SPECS`); each names its
implementation as `module:Class`, imported only when the method is built, so that reading a
scenario needs no torch. Any other kind is a plugin (simfed/plugins.py): `package.module:ClassName`
or a name registered under the `simfed.methods` entry points; its class brings its own
`spec_type`. What a kind can do (merge asynchronous updates, ...) is asked of its class.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Discriminator, SerializeAsAny, Tag, WrapValidator

from simfed.errors import FieldProblem
from simfed.learn.spec import BUILTIN_SPECS, SPEC_OF_KIND, MethodSpec, TrainingSpec
from simfed.plugins import METHODS_GROUP, PluginError, is_import_path, load_object, registered

if TYPE_CHECKING:
    from simfed.learn.adapters import AdaptedModel
    from simfed.learn.methods.base import Method


def method_class(kind: str) -> "type[Method]":
    """The class of `kind` (built-in, `package.module:ClassName`, or a `simfed.methods` entry point)."""
    from simfed.learn.methods.base import Method

    ref = SPEC_OF_KIND[kind].implementation if kind in SPEC_OF_KIND else kind
    cls = load_object(ref, METHODS_GROUP)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise PluginError(f"{ref!r} is not a simfed Method class (simfed.learn.methods.base.Method)")
    if not (isinstance(getattr(cls, "spec_type", None), type) and issubclass(cls.spec_type, MethodSpec)):
        raise PluginError(f"{ref!r}: its class needs `spec_type`, a subclass of simfed.learn.spec.MethodSpec")
    return cls


def build_method(spec: MethodSpec, training: TrainingSpec, model: "AdaptedModel") -> "Method":
    return method_class(spec.kind)(spec, training, model)


def builtin_kinds() -> tuple[str, ...]:
    return tuple(SPEC_OF_KIND)


def kinds_with(capability: type) -> tuple[str, ...]:
    """The built-in kinds whose class declares `capability` (e.g. `MergesAsync`)."""
    return tuple(kind for kind in SPEC_OF_KIND if issubclass(method_class(kind), capability))


def can(kind: str, capability: type) -> bool:
    return issubclass(method_class(kind), capability)


# ---------------------------------------------------------------- the scenario's `methods:` items

PLUGIN = "plugin"


def _tag(value: Any) -> str:
    """The union member a `methods:` item validates against: its built-in kind's spec, or the plugin one."""
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return SPEC_OF_KIND[kind].__name__ if isinstance(kind, str) and kind in SPEC_OF_KIND else PLUGIN


def unknown_kind(kind: Any) -> str:
    plugins = registered(METHODS_GROUP)
    more = f"; installed plugins: {', '.join(plugins)}" if plugins else ""
    return (f"unknown method kind {kind!r} (expected one of: {', '.join(SPEC_OF_KIND)}, "
            f"or package.module:ClassName{more})")


def plugin_spec_type(kind: Any) -> type[MethodSpec]:
    """The spec class of a kind that is not built in; FieldProblem (blaming `kind`) if there is none."""
    if not isinstance(kind, str):
        raise FieldProblem(("kind",), "required key missing" if kind is None else f"a kind is a string, got {kind!r}")
    if not is_import_path(kind) and kind not in registered(METHODS_GROUP):
        raise FieldProblem(("kind",), unknown_kind(kind))
    try:
        return method_class(kind).spec_type
    except PluginError as exc:
        raise FieldProblem(("kind",), str(exc)) from None


def _validate_plugin(value: Any, handler: Any) -> MethodSpec:
    if isinstance(value, MethodSpec):
        return value
    kind = value.get("kind") if isinstance(value, dict) else None
    if not isinstance(value, dict):
        return handler(value)  # pydantic's own "not a mapping" error
    return plugin_spec_type(kind).model_validate(value)


def spec_type_of(item: Any) -> type[MethodSpec] | None:
    """For error messages: the spec class a `methods:` item is meant for (None if unknown)."""
    kind = item.get("kind") if isinstance(item, dict) else None
    if kind in SPEC_OF_KIND:
        return SPEC_OF_KIND[kind]
    try:
        return plugin_spec_type(kind)
    except FieldProblem:
        return None


def owners_of(key: str) -> list[str]:
    """The built-in kinds whose spec has `key` (to say where a misplaced key belongs)."""
    return [kind for kind, spec in SPEC_OF_KIND.items() if key in spec.model_fields]


# One `methods:` item: a discriminated union on `kind` over the built-in specs, plus plugins.
AnyMethodSpec = Annotated[
    Union[
        tuple(Annotated[spec, Tag(spec.__name__)] for spec in BUILTIN_SPECS)
        + (Annotated[SerializeAsAny[MethodSpec], WrapValidator(_validate_plugin), Tag(PLUGIN)],)
    ],
    Discriminator(_tag),
]
