"""Scenario files: YAML → validated pydantic `Scenario`, with errors as `file:line: key.path: problem`.

The generic part (`load_document`) works for any pydantic model: it reads YAML with the line of
every key and list item, applies `--set key.path=value` overrides, validates, and turns each
pydantic error into one line that names the file, the line, the key path and what is wrong.
"""
from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator

from simfed import __version__
from simfed.data.spec import DataSpec
from simfed.errors import FieldProblem, SimfedError
from simfed.learn.methods.registry import AnyMethodSpec
from simfed.learn.spec import MethodSpec, TrainingSpec
from simfed.sim.spec import WorldSpec


Path_ = tuple[Any, ...]  # a key path into the document: ("world", "server", "deadline_s"), ("methods", 0)
M = TypeVar("M", bound=BaseModel)


class ScenarioError(SimfedError):
    """A scenario that cannot be used; `problems` holds one line per problem."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


# ---------------------------------------------------------------- YAML with line numbers

class LineLoader(yaml.SafeLoader):
    """A SafeLoader that also records the 1-based line of every mapping key and sequence item.

    `load_with_lines()` returns `(data, lines, duplicates)`: `lines[path]` is the line of the key
    (or `- ` item) at `path`, `lines[()]` the first line of the document; `duplicates` lists
    `(path, line, first_line)` for keys given twice in one mapping.
    """

    def load_with_lines(self) -> tuple[Any, dict[Path_, int], list[tuple[Path_, int, int]]]:
        try:
            node = self.get_single_node()
            if node is None:
                return None, {(): 1}, []
            lines: dict[Path_, int] = {(): node.start_mark.line + 1}
            duplicates: list[tuple[Path_, int, int]] = []
            self._record(node, (), lines, duplicates)
            return self.construct_document(node), lines, duplicates
        finally:
            self.dispose()

    def _record(self, node, path: Path_, lines, duplicates) -> None:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *anchor`: the merged keys carry the anchor's lines
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in first_line:
                        duplicates.append((path + (key,), line, first_line[key]))
                    else:
                        first_line[key] = line
                except TypeError:  # an unhashable key; construction reports it
                    continue
                lines[path + (key,)] = line
                self._record(value_node, path + (key,), lines, duplicates)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[path + (index,)] = item.start_mark.line + 1
                self._record(item, path + (index,), lines, duplicates)


def read_yaml(text: str, filename: str) -> tuple[Any, dict[Path_, int]]:
    """Parse `text`; raise ScenarioError for syntax errors and duplicate keys (with lines)."""
    try:
        data, lines, duplicates = LineLoader(text).load_with_lines()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        what = exc.problem or str(exc)
        if exc.context:
            started = exc.context_mark.line + 1 if exc.context_mark else None
            what += f" ({exc.context}" + (f" that starts at line {started})" if started else ")")
        raise ScenarioError([f"{filename}:{line}: YAML syntax error: {what}"]) from None
    except yaml.YAMLError as exc:
        raise ScenarioError([f"{filename}:1: YAML syntax error: {exc}"]) from None
    if duplicates:
        raise ScenarioError([
            f"{filename}:{line}: {dotted(path)}: duplicate key (first given at line {first})"
            for path, line, first in duplicates
        ])
    return data, lines


def dotted(path: Iterable[Any]) -> str:
    """("methods", 0, "rank") → "methods.0.rank", the spelling `--set` accepts."""
    return ".".join(str(part) for part in path)


# ---------------------------------------------------------------- the schema's shape

def _flatten_type(tp: Any) -> list[Any]:
    """Unwrap Annotated / Optional / Union into the concrete alternatives."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _flatten_type(typing.get_args(tp)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [t for arg in typing.get_args(tp) for t in _flatten_type(arg)]
    return [tp]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _field_names(model: type[BaseModel]) -> dict[str, str]:
    """Accepted key → field name (aliases included)."""
    names = {}
    for name, info in model.model_fields.items():
        names[name] = name
        if isinstance(info.alias, str):
            names[info.alias] = name
    return names


def _child_types(tp: Any, part: Any) -> list[Any]:
    out = []
    for t in _flatten_type(tp):
        origin = typing.get_origin(t)
        args = typing.get_args(t)
        if _is_model(t) and isinstance(part, str):
            name = _field_names(t).get(part)
            if name is not None:
                out.append(t.model_fields[name].annotation)
        elif origin in (list, tuple, set, frozenset, Sequence) and isinstance(part, int) and args:
            out.append(args[0])
        elif origin is dict and args:
            out.append(args[1])
    return out


def _node_at(data: Any, path: Path_) -> Any:
    for part in path:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return None
    return data


def allowed_keys(model: type[BaseModel], path: Path_, data: Any = None) -> set[str] | None:
    """The keys the schema accepts in the mapping at `path`; None when any key goes (free-form).

    With the document `data`, a `methods:` item is narrowed to its kind's spec: the keys of
    `kind: fedavg` are FedAvg's, not every method's."""
    candidates: list[Any] = [model]
    for part in path:
        candidates = [c for t in candidates for c in _child_types(t, part)]
    alternatives = [alt for t in candidates for alt in _flatten_type(t)]
    if data is not None and any(_is_model(alt) and issubclass(alt, MethodSpec) for alt in alternatives):
        from simfed.learn.methods.registry import spec_type_of

        spec = spec_type_of(_node_at(data, path))
        if spec is not None:
            alternatives = [spec]
    keys: set[str] = set()
    for alt in alternatives:
        if _is_model(alt):
            if alt.model_config.get("extra") != "forbid":
                return None
            keys |= set(_field_names(alt))
        elif typing.get_origin(alt) is dict or alt is dict or alt is Any:
            return None
    return keys


def unknown_key_message(key: Any, allowed: set[str] | None, kind: Any = None) -> str:
    """"unknown key" with the nearest accepted key; for a method's key that belongs to other
    kinds (`kind`: the item's own), which kinds those are."""
    message = "unknown key"
    if kind is not None:
        from simfed.learn.methods.registry import owners_of

        owners = owners_of(str(key))
        if owners:
            return f"{message} for kind '{kind}' (a key of {', '.join(owners)})"
    if allowed:
        close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
        if close:
            message += f" (did you mean '{close[0]}'?)"
        else:
            message += f" (expected one of: {', '.join(sorted(allowed))})"
    return message


def _kind_at(data: Any, path: Path_) -> Any:
    """The `kind` of the method item at `path` (None elsewhere)."""
    node = _node_at(data, path)
    if len(path) == 2 and path[0] == "methods" and isinstance(node, dict):
        return node.get("kind")
    return None


# ---------------------------------------------------------------- --set overrides

def _parse_path(key: str) -> Path_:
    return tuple(int(p) if p.isdigit() else p for p in key.split("."))


def apply_override(data: dict, text: str, model: type[BaseModel]) -> Path_:
    """Apply one `key.path=value` to `data` in place; return the path. Raise ScenarioError."""
    label = f"--set {text}"
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(p == "" for p in key.split(".")):
        raise ScenarioError([f"{label}: expected KEY.PATH=VALUE, e.g. world.server.deadline_s=60"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ScenarioError([f"{label}: value is not valid YAML: {str(exc).splitlines()[0]}"]) from None
    path = _parse_path(key)
    node: Any = data
    for depth, part in enumerate(path):
        here = path[:depth]
        last = depth == len(path) - 1
        if isinstance(node, list):
            if not isinstance(part, int) or not 0 <= part < len(node):
                raise ScenarioError([
                    f"{label}: {dotted(here)} is a list of {len(node)} items; "
                    f"'{part}' is not an index in it"])
            if last:
                node[part] = value
            else:
                node = node[part]
            continue
        if not isinstance(node, dict):
            raise ScenarioError([f"{label}: {dotted(here)} is not a mapping"])
        allowed = allowed_keys(model, here, data)
        if part not in node and allowed is not None and part not in allowed:
            raise ScenarioError([f"{label}: {unknown_key_message(part, allowed, _kind_at(data, here))}"])
        if last:
            node[part] = value
        else:
            if node.get(part) is None:
                node[part] = {}  # a section left to its defaults: start it empty
            node = node[part]
    return path


# ---------------------------------------------------------------- pydantic errors → lines

@dataclass
class _Source:
    filename: str
    lines: dict[Path_, int]
    overrides: dict[Path_, str] = field(default_factory=dict)  # path → the `--set` text

    def line_of(self, path: Path_) -> int:
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.lines:
                return self.lines[path[:cut]]
        return 1

    def where(self, path: Path_, anchor: Path_ | None = None) -> tuple[str, bool]:
        """`file:line` of `path` (or of `anchor`, the key to blame when `path` is missing), or
        `--set ...` if an override put it there; and whether the override is exactly `path`."""
        for opath, text in self.overrides.items():
            if path[: len(opath)] == opath:
                return f"--set {text}", path == opath
        return f"{self.filename}:{self.line_of(path if anchor is None else anchor)}", False


def _locate(loc: Sequence[Any], data: Any) -> tuple[Path_, bool]:
    """Map a pydantic `loc` onto a path in the data (dropping union tags); and if it exists there."""
    path: list[Any] = []
    node = data
    for index, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        elif index == len(loc) - 1 and isinstance(node, dict):
            path.append(part)  # the missing key itself
            return tuple(path), False
        else:
            continue  # a union member's tag or a validator's name, not a key in the file
        path.append(part)
    return tuple(path), True


_SHOW_INPUT = ("_type", "_parsing", "literal_error", "enum", "pattern_mismatch")


def _describe(error: dict, data: Any, model: type[BaseModel]) -> tuple[Path_, bool, str]:
    """(path, exists, message) of one pydantic error."""
    path, exists = _locate(error["loc"], data)
    kind = error["type"]
    message = error["msg"]
    problem = (error.get("ctx") or {}).get("error")
    if kind == "missing":
        return path, False, "required key missing"
    if kind == "extra_forbidden":
        return path, exists, unknown_key_message(path[-1], allowed_keys(model, path[:-1], data),
                                                 _kind_at(data, path[:-1]))
    if isinstance(problem, FieldProblem):
        deeper, exists = _locate(tuple(path) + problem.path, data)
        return deeper, exists, problem.message
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    shown = error.get("input")
    if kind.endswith(_SHOW_INPUT) and isinstance(shown, (str, int, float, bool, type(None))):
        message += f" (got {shown!r})"
    return path, exists, message


def format_errors(exc: ValidationError, data: Any, model: type[BaseModel], source: _Source) -> list[str]:
    entries = []
    for error in exc.errors():
        path, exists, message = _describe(error, data, model)
        # a missing key has no line of its own: blame the mapping that should hold it
        anchor = path if exists else path[:-1]
        where, exact = source.where(path, anchor)
        key = "" if exact or not path else f"{dotted(path)}: "
        entries.append((source.line_of(anchor), f"{where}: {key}{message}"))
    entries.sort(key=lambda e: (e[1].startswith("--set"), e[0]))  # the file's lines first
    return list(dict.fromkeys(text for _, text in entries))


def load_document(
    path: str | Path,
    model: type[M],
    overrides: Sequence[str] = (),
    defaults: dict[str, Any] | None = None,
) -> M:
    """Read YAML at `path`, apply `overrides`, validate against `model`; ScenarioError on any problem."""
    filename = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError([f"{filename}: cannot read: {exc.strerror or exc}"]) from None
    data, lines = read_yaml(text, filename)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError([f"{filename}:{lines[()]}: expected a mapping of keys at the top, "
                             f"got {type(data).__name__}"])
    for key, value in (defaults or {}).items():
        data.setdefault(key, value)
    source = _Source(filename, lines)
    problems = []
    for text_ in overrides:
        try:
            source.overrides[apply_override(data, text_, model)] = text_
        except ScenarioError as exc:
            problems += exc.problems
    if problems:
        raise ScenarioError(problems)
    try:
        document = model.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(format_errors(exc, data, model, source)) from None
    if hasattr(document, "_source"):
        document._source = source
    return document


# ---------------------------------------------------------------- the scenario

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OutputSpec(_Strict):
    """Where run directories go: `<dir>/<scenario name>/<timestamp>/`, and who else watches the run."""

    dir: str = "runs"  # relative to the working directory of `simfed run`
    # keep each device's trained model in RUN_DIR/models/ (what `simfed export` reads):
    # none | final (after the last round) | every_N (every N rounds, and the last)
    save_models: str = Field("none", pattern=r"^(none|final|every_[1-9][0-9]*)$")
    # trackers beside the live view (simfed/run/loggers.py): tensorboard -> RUN_DIR/tensorboard/
    loggers: list[typing.Literal["tensorboard"]] = Field(default_factory=list)

    # observer plugins (simfed/run/observers.py): `package.module:ClassName` or `simfed.observers` names
    observers: list[str] = Field(default_factory=list)

    @field_validator("observers")
    @classmethod
    def _observers_exist(cls, names: list[str]) -> list[str]:
        from simfed.plugins import OBSERVERS_GROUP, PluginError, load_object

        for index, name in enumerate(names):
            try:
                load_object(name, OBSERVERS_GROUP)
            except PluginError as exc:
                raise FieldProblem((index,), str(exc)) from None
        return names


class ReportSpec(_Strict):
    """What `simfed report` and summary.json compute beyond final values (simfed/report/targets.py)."""

    # mean test perplexities to reach: time, bytes and energy at the first evaluation at or below
    # each; None = the worst final mean perplexity among the methods that trained
    targets: list[float] | None = None


class ExecutorSpec(_Strict):
    """Where local updates run (simfed/run/executor.py). Results do not depend on it: `local` and
    `ray` give identical metrics at the same thread count per process."""

    kind: typing.Literal["local", "ray"] = "local"
    workers: int = Field(2, ge=1)  # Ray actors, each holding the base model once
    threads_per_worker: int = Field(0, ge=0)  # torch threads in each actor; 0 = training.threads
    gpus_per_worker: float = Field(0.0, ge=0)  # on a CUDA host: the GPU share of each actor; 0 = the host's GPUs split evenly
    address: str | None = None  # an existing Ray cluster ("auto", "ray://host:10001"); None: start one here
    # held-back local updates trained together as one batch on the shared frozen base (in process,
    # and inside each Ray worker); 1 = one by one. Same results to float rounding (1e-5 relative).
    batch_devices: int = Field(1, ge=1)


class Scenario(_Strict):
    """One experiment: a world, a corpus, a model and the methods compared in it."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # defaults to the file stem
    description: str = ""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)  # one run of every method per seed
    model: str = Field(min_length=1)  # a model card name (models/*.yaml)
    data: DataSpec
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    methods: list[AnyMethodSpec] = Field(min_length=1)  # each validated against its kind's spec
    world: WorldSpec
    output: OutputSpec = Field(default_factory=OutputSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)

    _source: _Source | None = PrivateAttr(None)  # lines of the file it was loaded from

    @field_validator("seeds")
    @classmethod
    def _seeds_distinct(cls, seeds: list[int]) -> list[int]:
        for index, seed in enumerate(seeds):
            if seed < 0:
                raise FieldProblem((index,), f"a seed is a non-negative integer, got {seed}")
            if seed in seeds[:index]:
                raise FieldProblem((index,), f"duplicate seed {seed}")
        return seeds

    @field_validator("methods")
    @classmethod
    def _method_names_unique(cls, methods: list[MethodSpec]) -> list[MethodSpec]:
        first: dict[str, int] = {}
        for index, method in enumerate(methods):
            if method.name in first:
                raise FieldProblem(
                    (index, "name"),
                    f"duplicate method name '{method.name}' (also methods.{first[method.name]}.name)")
            first[method.name] = index
        return methods

    @field_validator("world")
    @classmethod
    def _policy_the_learning_can_run(cls, world: WorldSpec, info: ValidationInfo) -> WorldSpec:
        # FedBuff/FedAsync need a method that merges staleness-weighted deltas (base.MergesAsync);
        # dry mode merges nothing, so there every method may run them
        training, methods = info.data.get("training"), info.data.get("methods")
        if world.server.policy == "sync" or methods is None or (training is not None and training.dry):
            return world
        from simfed.learn.methods.base import MergesAsync  # the method classes know: torch comes in
        from simfed.learn.methods.registry import can, kinds_with

        unable = [f"{m.name} ({m.kind})" for m in methods if not can(m.kind, MergesAsync)]
        if unable:
            raise FieldProblem(
                ("server", "policy"),
                f"'{world.server.policy}' needs methods that merge staleness-weighted updates "
                f"({', '.join(sorted(kinds_with(MergesAsync)))}); these cannot: {', '.join(unable)}")
        return world

    def where(self, *path: str | int) -> str:
        """Where a key was set, for a later error: `x.yaml:4`, `--set model=gpt2`, or the name.

        `scenario.where("model")` lets a check made after loading (the model card exists, the
        corpus is built) point at the line as validation errors do."""
        if self._source is None:
            return f"scenario {self.name}"
        return self._source.where(tuple(path))[0]

    def describe(self) -> str:
        """`phones_mixed: 2 methods, 40 devices, 20 rounds` (what `simfed validate` prints)."""
        return (f"{self.name}: {len(self.methods)} methods, {self.world.n_devices} devices, "
                f"{self.world.server.rounds} rounds")

    def resolved_yaml(self) -> str:
        """The scenario with every default filled in, as YAML (`scenario.resolved.yaml`)."""
        header = f"# {self.name}: resolved by simfed {__version__}; every default filled in\n"
        body = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
        return header + body


def load_scenario(path: str | Path, overrides: Sequence[str] = ()) -> Scenario:
    """Load and validate a scenario file; `overrides` are `key.path=value` strings (`--set`)."""
    return load_document(path, Scenario, overrides, defaults={"name": Path(path).stem})
