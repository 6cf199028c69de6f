"""Token cache: tokenize once, memmap after; a changed source invalidates; batching is used."""
from __future__ import annotations

import numpy as np

from simfed.data import ByteTokenizer, load_tokens
from simfed.data.tokenized import encode_documents


def test_roundtrip_is_a_memmap_with_identical_tokens(tmp_path, cache, words):
    path = tmp_path / "nums.txt"
    path.write_text("1 2 3 4")
    first = load_tokens(str(path), words)
    calls = words.calls
    second = load_tokens(str(path), words)
    assert words.calls == calls, "second load must not tokenize"
    assert isinstance(second.tokens, np.memmap) and second.tokens.dtype == np.int32
    np.testing.assert_array_equal(first.tokens, second.tokens)
    assert list(second.tokens) == [1, 2, 3, 4, 10**6]
    assert list(second.doc_starts) == [0, 5]


def test_changed_source_invalidates_and_stale_files_go(tmp_path, cache, words):
    path = tmp_path / "nums.txt"
    path.write_text("1 2 3")
    old = load_tokens(str(path), words)
    path.write_text("7 8 9")  # same size, new content
    new = load_tokens(str(path), words)
    assert old.version != new.version
    assert list(new.tokens) == [7, 8, 9, 10**6]
    assert len(list((cache / "tokens").rglob("*.tokens.npy"))) == 1


def test_tokenizers_get_their_own_cache(cache):
    a = load_tokens("toy:a", ByteTokenizer())

    class Shifted(ByteTokenizer):
        name = "bytes-shifted"

        def encode(self, text):
            return [b + 1 for b in text.encode()]

    b = load_tokens("toy:a", Shifted())
    assert len(a) == len(b) and not np.array_equal(a.tokens, b.tokens)


def test_encode_documents_batches_and_appends_eos():
    class Batching(ByteTokenizer):
        batches = 0

        def encode(self, text):
            raise AssertionError("encode_batch should be used")

        def encode_batch(self, texts):
            Batching.batches += 1
            return [list(t.encode()) for t in texts]

    tokens, starts = encode_documents(["ab", "c", "de"], Batching(), batch_chars=3)
    assert list(tokens) == [97, 98, 256, 99, 256, 100, 101, 256]
    assert list(starts) == [0, 3, 5, 8]
    assert Batching.batches == 2


def test_byte_tokenizer_roundtrip():
    tok = ByteTokenizer()
    assert tok.decode(tok.encode("Grüße") + [tok.eos_token_id]) == "Grüße"
