"""The synchronous merge (`mean_of_carriers`) and the shrink search, on hand-made numbers."""
from __future__ import annotations

import torch

from simfed.learn.aggregate import mean_of_carriers
from simfed.learn.memory import SHRINK_STEPS, shrink_search


def test_each_tensor_is_the_weighted_mean_of_the_uploads_that_carry_it():
    """a: both carry it, weights 1 and 3 → ([2, 4] + 3·[6, 0]) / 4 = [5, 1]; b: only the second
    → its own [7]; c: nobody → left out (the server keeps it); the dtype is the server's."""
    server = {"a": torch.zeros(2, dtype=torch.bfloat16), "b": torch.zeros(1), "c": torch.ones(1)}
    uploads = [{"a": torch.tensor([2.0, 4.0])}, {"a": torch.tensor([6.0, 0.0]), "b": torch.tensor([7.0])}]
    merged = mean_of_carriers(server, uploads, [1.0, 3.0])
    assert list(merged) == ["a", "b"]
    assert merged["a"].dtype == torch.bfloat16 and merged["a"].tolist() == [5.0, 1.0]
    assert merged["b"].tolist() == [7.0]


def test_the_weights_are_python_floats_summed_in_order():
    """Three uploads of 1.0 with weights 0.1, 0.2, 0.3: each w / (0.1 + 0.2 + 0.3) in Python float64."""
    ws = [0.1, 0.2, 0.3]
    total = 0.1 + 0.2 + 0.3  # 0.6000000000000001, not 0.6
    expected = (ws[0] / total) * 1.0 + (ws[1] / total) * 1.0 + (ws[2] / total) * 1.0
    server = {"x": torch.zeros(1, dtype=torch.float64)}
    merged = mean_of_carriers(server, [{"x": torch.ones(1, dtype=torch.float64)}] * 3, ws)
    assert merged["x"].item() == expected


def test_shrink_halves_only_the_devices_that_do_not_fit_until_they_do():
    """Need = the memory figure itself (a device needs what it is sized for); capacities 100 and 30
    from figures 100, 100: device 0 fits at once, device 1 at 100 → 50 → 25."""
    calls = []

    def needs(figures):
        calls.append(list(figures))
        return [int(f) for f in figures]

    assert shrink_search([100.0, 100.0], [100, 30], needs) == [100.0, 25.0]
    assert calls == [[100.0, 100.0], [100.0, 50.0], [100.0, 25.0]]


def test_shrink_gives_up_after_its_steps_and_none_means_fits():
    never = shrink_search([1024.0, 8.0], [0, 0], lambda figures: [1, None])
    assert never == [1024.0 / 2 ** SHRINK_STEPS, 8.0]
