"""Fixtures of the data tests: a private cache folder, offline `datasets`, tiny tokenizers."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # read when `datasets` is first imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class WordTokenizer:
    """Whitespace-separated integers as token ids, eos 10**6: unique ids make any overlap visible."""

    name = "words-test"
    eos_token_id = 10**6

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, text: str) -> list[int]:
        self.calls += 1
        return [int(w) for w in text.split()]


@pytest.fixture
def words():
    return WordTokenizer()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh cache folder, also set as $SIMFED_CACHE so nothing touches the user's cache."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("SIMFED_CACHE", str(folder))
    return folder


@pytest.fixture
def numbered_jsonl(tmp_path):
    """A .jsonl source of 60 documents whose words are the unique integers 0..N-1 in order.

    Document d holds 50 + 7*(d % 11) numbers, so documents differ in length.
    """
    import json

    path = tmp_path / "numbered.jsonl"
    n = 0
    with path.open("w") as f:
        for d in range(60):
            k = 50 + 7 * (d % 11)
            f.write(json.dumps({"text": " ".join(str(i) for i in range(n, n + k)), "label": d % 3}) + "\n")
            n += k
    return path
