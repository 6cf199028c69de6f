"""Users → token streams → disjoint train/val/test splits per client; numpy window helpers for batches."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .spec import DataError, DataSpec, parse_source
from .tokenized import TOKEN_DTYPE, TokenStream, load_tokens, tokenizer_id

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class UserData:
    """One client's data: 1-D int32 token arrays (read-only), documents separated by eos."""

    name: str
    source: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def short_name(source: str) -> str:
    """A label for outputs: `de`, `ag_news-label2`, `reviews` (a file's stem)."""
    ref = parse_source(source)
    if ref.kind in ("builtin", "toy"):
        return ref.name
    base = ref.name.rstrip("/").split("/")[-1]
    if ref.kind == "local":
        base = Path(base).stem or base
    parts = [base] + ([ref.config] if ref.config else []) + [f"{k}{v}" for k, v in ref.filters]
    return "-".join(parts)


def _apportion(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Split `total` tokens over the mixture by weight (largest remainder; sums exactly to total)."""
    raw = {k: total * w for k, w in weights.items()}
    out = {k: int(np.floor(v)) for k, v in raw.items()}
    rest = total - sum(out.values())
    for k in sorted(raw, key=lambda k: out[k] - raw[k])[:rest]:
        out[k] += 1
    return out


@dataclass
class _Request:
    client: int
    user: int  # index into spec.users
    split: str
    source: str
    n: int
    start: int = 0  # position in the source's shuffled stream, set by the allocation


class _Shuffled:
    """A token stream with its documents in a seeded random order, read by position ranges."""

    def __init__(self, stream: TokenStream, seed: int):
        source_key = int(hashlib.sha256(stream.source.encode()).hexdigest()[:8], 16)
        # per (seed, source): adding a user on another source does not reshuffle this one
        rng = np.random.default_rng([seed, source_key])
        self.stream = stream
        self.order = rng.permutation(stream.n_docs)
        lengths = np.diff(stream.doc_starts)[self.order]
        self.cum = np.concatenate([[0], np.cumsum(lengths)])  # (n_docs+1,) shuffled doc offsets

    def __len__(self) -> int:
        return int(self.cum[-1])

    def take(self, a: int, b: int) -> np.ndarray:
        """Tokens [a, b) of the shuffled stream (cut inside documents where a or b falls)."""
        if b <= a:
            return np.zeros(0, TOKEN_DTYPE)
        first = int(np.searchsorted(self.cum, a, side="right")) - 1
        last = int(np.searchsorted(self.cum, b, side="left"))
        pieces = []
        for k in range(first, last):
            doc = self.order[k]
            s0, s1 = self.stream.doc_starts[doc], self.stream.doc_starts[doc + 1]
            lo = s0 + max(0, a - self.cum[k])
            hi = s0 + min(s1 - s0, b - self.cum[k])
            pieces.append(self.stream.tokens[lo:hi])
        return np.concatenate(pieces).astype(TOKEN_DTYPE)


def _requests(spec: DataSpec, n_clients: int) -> list[_Request]:
    out = []
    for client in range(n_clients):
        j = client % len(spec.users)
        user = spec.users[j]
        for split in SPLITS:
            for source, n in _apportion(user.size(split), user.mixture(split)).items():
                out.append(_Request(client, j, split, source, n))
    return out


def _too_little(spec: DataSpec, names: list[str], source: str, reqs: list[_Request],
                have: int, tok: str) -> DataError:
    asked: dict[int, int] = {}
    clients: dict[int, set[int]] = {}
    for r in reqs:
        asked[r.user] = asked.get(r.user, 0) + r.n
        clients.setdefault(r.user, set()).add(r.client)
    splits = "+".join(s for s in SPLITS if any(r.split == s and r.n for r in reqs))
    worst = max(asked, key=asked.__getitem__)
    biggest = max((r for r in reqs if r.user == worst), key=lambda r: r.n).split
    key = spec.users[worst].size_key(worst, biggest)
    total = sum(asked.values())
    if len(asked) == 1:
        k = len(clients[worst])
        who = f"user '{names[worst]}'" + (f" on {k} clients" if k > 1 else "") + " asks"
        more = ", use fewer clients" if k > 1 else ""
    else:
        who = "users " + ", ".join(
            f"'{names[u]}'" + (f" ({len(clients[u])} clients)" if len(clients[u]) > 1 else "") for u in asked
        ) + " ask"
        more = ", use fewer clients"
    return DataError(f"{who} {total} {splits} tokens but source '{source}' has {have} ({tok} tokens); "
                     f"lower {key}{more} or pick another source")


def _allocate(reqs: list[_Request], length: int) -> None:
    """Train from the front in client order; test, then val, from the back: so a client's test set
    does not move when train or val sizes change."""
    front, back = 0, length
    for r in (r for r in reqs if r.split == "train"):
        r.start, front = front, front + r.n
    for split in ("test", "val"):
        for r in (r for r in reqs if r.split == split):
            back -= r.n
            r.start = back


def _user_names(spec: DataSpec) -> list[str]:
    names = [u.name or short_name(u.source) for u in spec.users]
    return [n if names.count(n) == 1 else f"{n}-{j}" for j, n in enumerate(names)]


def build_federation(
    spec: DataSpec, tokenizer, n_clients: int, seed: int, log: Callable[[str], None] | None = None
) -> list[UserData]:
    """Each client's train/val/test token arrays; client i is the user spec users[i % len(users)].

    Per source, documents are shuffled with (seed, source) and laid end to end; every request
    (client × split × mixture part) gets its own range of that stream, so all splits of all
    clients are disjoint. Sizes are exact: ranges are cut at token positions, NOT at document
    boundaries (a document may straddle two splits; documents are separated by eos).
    Deterministic for a (spec, tokenizer, n_clients, seed).
    """
    if n_clients < 1:
        raise DataError(f"n_clients must be >= 1, got {n_clients}")
    if spec.partition is not None:  # one user a device, each with its own mixture (partition.py)
        from .partition import partitioned

        spec = partitioned(spec, n_clients, seed)
    names = _user_names(spec)
    reqs = _requests(spec, n_clients)
    tok = tokenizer_id(tokenizer)
    by_source: dict[str, list[_Request]] = {}
    for r in reqs:
        by_source.setdefault(r.source, []).append(r)
    shuffled: dict[str, _Shuffled] = {}
    for source, rs in by_source.items():
        shuffled[source] = _Shuffled(load_tokens(source, tokenizer, spec.cache_dir, log), seed)
        if sum(r.n for r in rs) > len(shuffled[source]):
            raise _too_little(spec, names, source, rs, len(shuffled[source]), tok)
        _allocate(rs, len(shuffled[source]))
    per_user = [sum(1 for c in range(n_clients) if c % len(spec.users) == j) for j in range(len(spec.users))]
    out = []
    for client in range(n_clients):
        j = client % len(spec.users)
        splits = {}
        for split in SPLITS:
            parts = [shuffled[r.source].take(r.start, r.start + r.n)
                     for r in reqs if r.client == client and r.split == split]
            arr = np.concatenate(parts) if parts else np.zeros(0, TOKEN_DTYPE)
            arr.flags.writeable = False
            splits[split] = arr
        name = names[j] if per_user[j] == 1 else f"{names[j]}.{client // len(spec.users)}"
        out.append(UserData(name, spec.users[j].source, **splits))
    return out


def sample_windows(tokens: np.ndarray, seq_len: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """(batch_size, seq_len+1) int64 windows at uniformly random starts; inputs `[:, :-1]`, targets `[:, 1:]`.

    The result depends only on `tokens` and the state of `rng` (one `rng.integers` draw).
    """
    n = len(tokens)
    if n < seq_len + 1:
        raise DataError(f"a split of {n} tokens cannot hold one window of seq_len+1 = {seq_len + 1}; "
                        "raise its *_tokens or lower training.seq_len")
    starts = rng.integers(0, n - seq_len, size=batch_size)  # last valid start is n - seq_len - 1
    return np.asarray(tokens)[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64)


def fixed_windows(tokens: np.ndarray, seq_len: int, n_windows: int) -> np.ndarray:
    """(n_windows, seq_len+1) int64 windows at evenly spaced starts from the first to the last
    possible one: deterministic (no randomness), for evaluation. Windows overlap only when the
    split holds fewer than n_windows × (seq_len+1) tokens."""
    n = len(tokens)
    if n < seq_len + 1:
        raise DataError(f"a split of {n} tokens cannot hold one window of seq_len+1 = {seq_len + 1}; "
                        "raise its *_tokens or lower training.seq_len")
    starts = np.linspace(0, n - seq_len - 1, num=n_windows).round().astype(np.int64)
    return np.asarray(tokens)[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64)
