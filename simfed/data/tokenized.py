"""Token streams: a source tokenized once per tokenizer, cached as memory-mapped int32 .npy files."""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from .corpora import resolve_cache_dir, source_documents, source_version
from .spec import DataError

TOKEN_DTYPE = np.int32  # ids < 2**31; torch.from_numpy takes int32 (uint32 it barely supports)
BATCH_CHARS = 1 << 20  # characters handed to a batching tokenizer at a time (bounds memory)


class Tokenizer(Protocol):
    """What the data side needs of a tokenizer (the learning side wraps HF tokenizers in it)."""

    name: str  # stable id: keys the token cache, e.g. "smollm2-135m"
    eos_token_id: int  # appended after every document

    def encode(self, text: str) -> list[int]: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255 and end-of-text 256: vocab 257, no files, for tests and tiny models."""

    name = "bytes-v1"
    eos_token_id = 256
    vocab_size = 257

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class TokenStream:
    """A source as one token array; document d is tokens[doc_starts[d]:doc_starts[d+1]], eos last."""

    source: str
    tokens: np.ndarray  # (N,) int32, memory-mapped read-only
    doc_starts: np.ndarray  # (n_docs + 1,) int64 offsets into tokens
    version: str  # the source's version it was made from

    @property
    def n_docs(self) -> int:
        return len(self.doc_starts) - 1

    def __len__(self) -> int:
        return len(self.tokens)


def _encode_many(tokenizer, texts: list[str]) -> list[Sequence[int]]:
    """Batch through `encode_batch` (our wrappers, HF `tokenizers`) or a HF tokenizer's `__call__`."""
    if hasattr(tokenizer, "encode_batch"):
        out = tokenizer.encode_batch(texts)
        return [getattr(o, "ids", o) for o in out]  # `tokenizers.Encoding` carries `.ids`
    if callable(tokenizer) and hasattr(tokenizer, "batch_decode"):  # a raw transformers tokenizer
        return tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [tokenizer.encode(t) for t in texts]


def encode_documents(documents: Sequence[str], tokenizer, batch_chars: int = BATCH_CHARS) -> tuple[np.ndarray, np.ndarray]:
    """(tokens (N,) int32, doc_starts (n_docs+1,) int64): every document followed by eos."""
    eos = int(tokenizer.eos_token_id)
    pieces: list[np.ndarray] = []
    lengths: list[int] = []
    batch: list[str] = []
    size = 0

    def flush() -> None:
        for ids in _encode_many(tokenizer, batch):
            arr = np.asarray(list(ids) + [eos], dtype=np.int64)
            if arr.size and (arr.min() < 0 or arr.max() >= 2**31):
                raise ValueError(f"tokenizer {getattr(tokenizer, 'name', tokenizer)!r} returned ids outside int32")
            pieces.append(arr.astype(TOKEN_DTYPE))
            lengths.append(arr.size)
        batch.clear()

    for doc in documents:
        batch.append(doc)
        size += len(doc)
        if size >= batch_chars:
            flush()
            size = 0
    if batch:
        flush()
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, TOKEN_DTYPE)
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    return tokens, starts


def tokenizer_id(tokenizer) -> str:
    """The tokenizer's stable `name` (a raw HF tokenizer: its `name_or_path`)."""
    name = getattr(tokenizer, "name", None) or getattr(tokenizer, "name_or_path", None)
    if not isinstance(name, str) or not name:
        raise TypeError("a tokenizer needs a stable `name: str` to key the token cache")
    return name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "x"


def cache_paths(cache_dir: Path, source: str, tok_name: str, version: str) -> tuple[Path, Path]:
    """(tokens.npy, docs.npy) for (source, tokenizer, source version)."""
    folder = cache_dir / "tokens" / f"{_slug(source)}-{hashlib.sha256(source.encode()).hexdigest()[:8]}"
    stem = f"{_slug(tok_name)}-{hashlib.sha256(tok_name.encode()).hexdigest()[:6]}-{version[:16]}"
    return folder / f"{stem}.tokens.npy", folder / f"{stem}.docs.npy"


def _save_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def load_tokens(
    source: str, tokenizer, cache_dir: Path | None = None, log: Callable[[str], None] | None = None
) -> TokenStream:
    """`source` tokenized by `tokenizer`: from the cache (a memmap) or tokenized now and cached.

    The cache key is (source, tokenizer name, source version): an edited local file or a rebuilt
    corpus gets new tokens, and older token files of the same pair are removed.
    """
    cache = resolve_cache_dir(cache_dir)
    name = tokenizer_id(tokenizer)
    version = source_version(source, cache, log)
    tok_path, docs_path = cache_paths(cache, source, name, version)
    if not (tok_path.exists() and docs_path.exists()):
        documents = source_documents(source, cache, log)
        if not documents:
            raise DataError(f"source '{source}' has no text (no non-empty documents)")
        if log:
            log(f"tokenizing {source} with {name} ({sum(map(len, documents)) / 1e6:.2f} M chars)")
        tokens, starts = encode_documents(documents, tokenizer)
        tok_path.parent.mkdir(parents=True, exist_ok=True)
        prefix = tok_path.name[: -len(f"{version[:16]}.tokens.npy")]
        for old in tok_path.parent.glob(prefix + "*.npy"):  # stale versions of this pair
            old.unlink(missing_ok=True)
        _save_atomic(docs_path, starts)
        _save_atomic(tok_path, tokens)  # written last: its presence marks a complete entry
    return TokenStream(source, np.load(tok_path, mmap_mode="r"), np.load(docs_path), version)
