"""build_federation: exact sizes, disjoint splits and clients, determinism, the too-little error."""
from __future__ import annotations

import numpy as np
import pytest

from simfed.data import ByteTokenizer, DataError, DataSpec, build_federation

EOS = 10**6


def _spec(source, cache, **sizes):
    return DataSpec(users=[{"source": str(source), **sizes}], cache_dir=cache)


def _ids(arr):
    return set(int(t) for t in arr if t != EOS)


def test_sizes_exact_and_everything_disjoint(numbered_jsonl, cache, words):
    spec = _spec(numbered_jsonl, cache, train_tokens=700, val_tokens=150, test_tokens=120)
    fed = build_federation(spec, words, n_clients=3, seed=0)  # three clients on one source
    seen: set[int] = set()
    total = 0
    for user in fed:
        assert (len(user.train), len(user.val), len(user.test)) == (700, 150, 120)
        for split in (user.train, user.val, user.test):
            ids = _ids(split)
            assert not ids & seen, "two splits share tokens"
            seen |= ids
            total += int((split != EOS).sum())
    assert len(seen) == total  # no token position used twice, even within a split
    assert [u.name for u in fed] == ["numbered.0", "numbered.1", "numbered.2"]


def test_deterministic_for_a_seed_and_varies_with_it(numbered_jsonl, cache, words):
    spec = _spec(numbered_jsonl, cache, train_tokens=500, val_tokens=100, test_tokens=100)
    a = build_federation(spec, words, 2, seed=7)
    b = build_federation(spec, words, 2, seed=7)
    c = build_federation(spec, words, 2, seed=8)
    for x, y in zip(a, b):
        for split in ("train", "val", "test"):
            np.testing.assert_array_equal(getattr(x, split), getattr(y, split))
    assert not np.array_equal(a[0].train, c[0].train)


def test_test_split_does_not_move_when_train_grows(numbered_jsonl, cache, words):
    sizes = dict(val_tokens=100, test_tokens=100)
    small = build_federation(_spec(numbered_jsonl, cache, train_tokens=300, **sizes), words, 1, seed=1)[0]
    big = build_federation(_spec(numbered_jsonl, cache, train_tokens=900, **sizes), words, 1, seed=1)[0]
    np.testing.assert_array_equal(small.test, big.test)
    np.testing.assert_array_equal(small.val, big.val)
    np.testing.assert_array_equal(small.train, big.train[:300])


def test_clients_cycle_over_users_with_unequal_sizes(cache):
    spec = DataSpec(users=["toy:a", {"source": "toy:b", "train_tokens": 3000}], train_tokens=5000,
                    val_tokens=500, test_tokens=400, cache_dir=cache)
    fed = build_federation(spec, ByteTokenizer(), n_clients=4, seed=0)
    assert [(u.name, u.source, len(u.train)) for u in fed] == [
        ("toy:a.0", "toy:a", 5000), ("toy:b.0", "toy:b", 3000), ("toy:a.1", "toy:a", 5000), ("toy:b.1", "toy:b", 3000)]
    assert all(len(u.val) == 500 and len(u.test) == 400 for u in fed)
    assert b"=" in bytes(fed[0].train[:200].astype(np.uint8)) and b"=" not in bytes(fed[1].train[:200].astype(np.uint8))
    assert not fed[0].train.flags.writeable


def test_out_of_domain_val_and_test_mixture(numbered_jsonl, cache, words):
    label0 = f"{numbered_jsonl}?label=0"
    label1 = f"{numbered_jsonl}?label=1"
    spec = DataSpec(users=[{"source": label0, "val_source": [label0, label1],
                            "test_source": {label0: 1, label1: 3}}],
                    train_tokens=600, val_tokens=200, test_tokens=200, cache_dir=cache)
    user = build_federation(spec, words, 1, seed=0)[0]
    assert (len(user.train), len(user.val), len(user.test)) == (600, 200, 200)
    assert not _ids(user.train) & _ids(user.val) and not _ids(user.val) & _ids(user.test)
    assert user.name == "numbered-label0"


def test_too_little_text_is_one_actionable_line(numbered_jsonl, cache, words):
    spec = DataSpec(users=["toy:a", str(numbered_jsonl)], train_tokens=20000, val_tokens=1000,
                    test_tokens=1000, cache_dir=cache)
    with pytest.raises(DataError) as info:
        build_federation(spec, _Mixed(words), 2, seed=0)
    msg = str(info.value)
    assert "\n" not in msg
    assert "user 'numbered' asks 22000 train+val+test tokens but source" in msg
    assert "has 5055 (mixed-test tokens)" in msg
    assert "lower data.users[1].train_tokens (now the default data.train_tokens)" in msg and "pick another source" in msg


def test_too_little_text_with_several_clients_says_fewer_clients(numbered_jsonl, cache, words):
    spec = _spec(numbered_jsonl, cache, train_tokens=2000, val_tokens=0, test_tokens=0)
    with pytest.raises(DataError, match=r"user 'numbered' on 3 clients asks 6000 train tokens .*"
                                        r"lower data.users\[0\].train_tokens, use fewer clients"):
        build_federation(spec, words, 3, seed=0)


class _Mixed:
    """Bytes for the toy source, integers for the numbered one (one tokenizer for both users)."""

    name = "mixed-test"
    eos_token_id = EOS

    def __init__(self, words):
        self.words = words

    def encode(self, text):
        return self.words.encode(text) if text[:1].isdigit() and "=" not in text else list(text.encode())
