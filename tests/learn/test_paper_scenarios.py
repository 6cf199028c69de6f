"""The paper studies in scenarios/paper/ run the paper's setting: matched baselines, and Table 2's
CoMiGS with the generalist-favoured load balancing (importance 0.5; the paper's Table 2 = Table 5's column)."""
from __future__ import annotations

from pathlib import Path

import pytest

from simfed.config import load_scenario

PAPER = sorted((Path(__file__).resolve().parents[2] / "scenarios" / "paper").glob("*.yaml"))


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_studies_match_the_baselines(path):
    for m in load_scenario(path).methods:
        if m.kind in ("local", "fedavg", "pcl", "centralized", "ffa_lora"):
            assert m.match == "paper", (path.name, m.name)
        if m.kind in ("hetlora", "flexlora"):
            assert m.match in ("paper", "full", "active") and m.attn_rank == 8


@pytest.mark.parametrize("path", [p for p in PAPER if p.stem.startswith("table2_")], ids=lambda p: p.stem)
def test_table2_comigs_uses_the_generalist_favoured_lb(path):
    comigs = [m for m in load_scenario(path).methods if m.kind == "comigs"]
    assert comigs and all(m.lb_form == "generalist" and m.lb_importance == 0.5 for m in comigs)
