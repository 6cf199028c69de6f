"""Two tiny in-memory domains (`toy:a` arithmetic, `toy:b` letter patterns) for tests: no download."""
from __future__ import annotations

import numpy as np

TOY_VERSION = "toy-v1"  # bump when the generators change: it keys the token cache


def _arithmetic_doc(rng: np.random.Generator, lines: int) -> str:
    out = []
    for _ in range(lines):
        a, b = (int(x) for x in rng.integers(0, 50, size=2))
        op = "+-"[int(rng.integers(0, 2))]
        out.append(f"{a}{op}{b}={a + b if op == '+' else a - b};")
    return " ".join(out)


def _letters_doc(rng: np.random.Generator, lines: int) -> str:
    out = []
    for _ in range(lines):
        start = int(rng.integers(0, 23))
        unit = "abcdefghijklmnopqrstuvwxyz"[start:start + 3]
        out.append(unit * int(rng.integers(2, 5)))
    return " ".join(out)


def toy_corpus_two_domains(n_docs: int = 200, lines_per_doc: int = 40) -> dict[str, list[str]]:
    """{"toy:a": docs, "toy:b": docs}: ~60k characters each by default, fixed content.

    `toy:a` is arithmetic like `12+7=19;`, `toy:b` repeats three-letter runs like `klmklmklm` —
    different enough that a tiny model's perplexity on one barely moves when trained on the other.
    """
    rng_a = np.random.default_rng(1)  # fixed: the toy corpus is data, not a random draw
    rng_b = np.random.default_rng(2)
    return {
        "toy:a": [_arithmetic_doc(rng_a, lines_per_doc) for _ in range(n_docs)],
        "toy:b": [_letters_doc(rng_b, lines_per_doc) for _ in range(n_docs)],
    }


def toy_documents(name: str) -> list[str]:
    """The documents of built-in toy source `name` ("toy:a" | "toy:b")."""
    return toy_corpus_two_domains()[name]
