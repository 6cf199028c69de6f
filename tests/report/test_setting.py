"""`simfed report`'s setting section: each method's matching rule, LB form and parameters per device."""
from __future__ import annotations

from simfed.report.setting import per_device, setting_markdown


def test_runs_of_equal_counts_are_ranges_of_devices():
    assert per_device([47616, 26880, 26880, 26880]) == "0: 47,616; 1–3: 26,880"
    assert per_device([5, 6, 5]) == "0: 5; 1: 6; 2: 5"
    assert per_device([7]) == "0: 7"


def test_the_section_names_rule_lb_and_counts_seed_entries_included():
    summary = {"methods": {
        "ffa": {"setting": {"match": "paper: one MLP LoRA of rank 16 (A frozen)", "lb_form": "none (no router)",
                            "trainable_params": [14336, 14336], "held_params": [26624, 26624]}},
        # several seeds whose fleets differ: the mean entry drops the setting, the seeds keep it
        "gxs": {"seeds": {"0": {"setting": {"match": "reference", "lb_form": "uniform, λ = 0.01",
                                             "trainable_params": [47616, 26880], "held_params": [47616, 26880]}}}},
        "old": {"final_mean_ppl": 3.0},  # a run from before the setting was recorded
    }}
    text = setting_markdown(summary)
    assert "| ffa | paper: one MLP LoRA of rank 16 (A frozen) | none (no router) | 0–1: 14,336 (held, frozen included: 0–1: 26,624) |" in text
    assert "| gxs | reference | uniform, λ = 0.01 | 0: 47,616; 1: 26,880 |" in text
    assert "| old |" not in text
    assert setting_markdown({"methods": {"old": {}}}) == ""
