"""Window helpers: fixed_windows is deterministic and evenly spaced; sample_windows depends only on the rng."""
from __future__ import annotations

import numpy as np
import pytest

from simfed.data import DataError, fixed_windows, sample_windows


def test_fixed_windows_evenly_spaced_and_deterministic():
    tokens = np.arange(1000, dtype=np.int32)
    w = fixed_windows(tokens, seq_len=9, n_windows=5)
    assert w.shape == (5, 10) and w.dtype == np.int64
    assert list(w[:, 0]) == [0, 248, 495, 742, 990]  # first to last possible start
    np.testing.assert_array_equal(w, fixed_windows(tokens, 9, 5))
    np.testing.assert_array_equal(w[:, 1:] - w[:, :-1], 1)


def test_sample_windows_depends_only_on_the_rng():
    tokens = np.arange(500, dtype=np.int32)
    a = sample_windows(tokens, 16, 8, np.random.default_rng(3))
    b = sample_windows(tokens, 16, 8, np.random.default_rng(3))
    c = sample_windows(tokens, 16, 8, np.random.default_rng(4))
    assert a.shape == (8, 17)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.max() <= 499 and (a[:, 1:] - a[:, :-1] == 1).all()


def test_too_short_split_is_a_data_error():
    with pytest.raises(DataError, match="seq_len"):
        sample_windows(np.arange(5), 8, 2, np.random.default_rng(0))
    with pytest.raises(DataError):
        fixed_windows(np.arange(5), 8, 2)
