"""The paper's routing pictures from a saved run (one made with `training.save_routing: true`).

    .venv/bin/python analysis/routing.py RUN_DIR [--by-device] [--layers 0,5,11] [--out DIR]

Writes, next to the run's other outputs (or into --out):

- routing_fig4.png — paper Figure 4: per layer, the average routing score of the generalist
  (expert 0) vs the specialists (all other experts together), averaged over the evaluations
  after round 0 (left), and the generalist's score per layer at every evaluation (right).
  One row per method (mean over seeds and devices), or per method × device with --by-device.
- routing_tokens.html — paper Figure 5: the first test window of every device at the last
  evaluation (first seed), each token coloured by its top-1 expert, one line per layer.

Scores are the mean top-k routing weights over each device's test windows (simfed/learn/routing.py).
"""
from __future__ import annotations

import argparse
import html
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from simfed.learn.routing import read_routing  # noqa: E402

# expert 0 (generalist) blue, specialists warm; more than 6 experts cycle
EXPERT_COLOURS = ["#9ecae1", "#fdae6b", "#fc9272", "#a1d99b", "#bcbddc", "#fdd0a2"]


# ---------------------------------------------------------------- numbers

def generalist_by_round(records: Iterable[dict[str, Any]], by_device: bool = False) -> dict[str, dict[int, np.ndarray]]:
    """{row label: {round: per-layer generalist score}}, averaged over seeds (and devices unless by_device)."""
    groups: dict[str, dict[int, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        label = f"{r['method']} · device {r['device']}" if by_device else r["method"]
        groups[label][int(r["round"])].append(r["generalist"])
    return {
        label: {rnd: np.mean(np.asarray(v, dtype=float), axis=0) for rnd, v in sorted(rounds.items())}
        for label, rounds in groups.items()
    }


def training_average(per_round: dict[int, np.ndarray]) -> np.ndarray:
    """Per layer, the generalist score averaged over the evaluations after round 0 (all if only round 0)."""
    rounds = [r for r in per_round if r > 0] or list(per_round)
    return np.mean([per_round[r] for r in rounds], axis=0)


# ---------------------------------------------------------------- Figure 4

def figure4(records: list[dict[str, Any]], path: Path, by_device: bool = False) -> Path:
    curves = generalist_by_round(records, by_device)
    rows = max(len(curves), 1)
    fig = Figure(figsize=(11, 2.8 * rows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 2, squeeze=False)
    for (label, per_round), (left, right) in zip(curves.items(), axes):
        avg = training_average(per_round)
        layers = np.arange(len(avg))
        width = 0.4
        left.bar(layers - width / 2, avg, width, label="generalist", color=EXPERT_COLOURS[0])
        left.bar(layers + width / 2, 1.0 - avg, width, label="specialists", color=EXPERT_COLOURS[1])
        left.axhline(0.5, color="grey", lw=0.6, ls=":")
        left.set_ylim(0, 1)
        left.xaxis.set_major_locator(MaxNLocator(integer=True))
        left.set_xlabel("layer")
        left.set_ylabel("average routing score")
        left.set_title(f"{label}: averaged over training")
        left.legend(fontsize=8)
        rounds = sorted(per_round)
        grid = np.stack([per_round[r] for r in rounds], axis=1)  # (layers, rounds)
        im = right.imshow(grid, aspect="auto", origin="lower", cmap="coolwarm_r", vmin=0, vmax=1,
                          extent=(-0.5, len(rounds) - 0.5, -0.5, grid.shape[0] - 0.5))
        right.set_xticks(range(len(rounds)), [str(r) for r in rounds])
        right.set_xlabel("round (evaluation)")
        right.yaxis.set_major_locator(MaxNLocator(integer=True))
        right.set_ylabel("layer")
        right.set_title(f"{label}: generalist score per layer")
        fig.colorbar(im, ax=right, label="generalist score")
    if not curves:
        axes[0][0].text(0.5, 0.5, "no routing records", ha="center", va="center")
    fig.savefig(path, dpi=120)
    return path


# ---------------------------------------------------------------- Figure 5

def pick_layers(n_layers: int, wanted: list[int] | None) -> list[int]:
    if wanted:
        return [l for l in wanted if 0 <= l < n_layers]
    if n_layers <= 12:
        return list(range(n_layers))
    return sorted({round(x) for x in np.linspace(0, n_layers - 1, 6)})


def figure5(records: list[dict[str, Any]], path: Path, layers: list[int] | None = None) -> Path:
    """HTML: per method and device, the sample window's tokens coloured by top-1 expert per layer."""
    if records:
        seed = min(int(r["seed"]) for r in records)
        last: dict[tuple[str, int], dict[str, Any]] = {}
        for r in records:
            if int(r["seed"]) != seed:
                continue
            key = (r["method"], int(r["device"]))
            if key not in last or int(r["round"]) >= int(last[key]["round"]):
                last[key] = r
    else:
        seed, last = 0, {}
    max_e = max((max(r["n_experts"]) for r in last.values()), default=2)
    legend = " ".join(
        f'<span class="tok" style="background:{EXPERT_COLOURS[e % len(EXPERT_COLOURS)]}">'
        f'{"expert 0 (generalist)" if e == 0 else f"expert {e} (specialist)"}</span>'
        for e in range(max_e)
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>routing: top-1 expert per token</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:1em auto}"
        ".tok{white-space:pre-wrap;font-family:monospace;border-radius:2px;padding:0 1px}"
        ".layer{margin:2px 0;line-height:1.6}.lab{display:inline-block;width:5em;color:#666;font-size:80%}</style>",
        "</head><body><h1>Top-1 expert of every token, per layer (paper Fig. 5)</h1>",
        f"<p>Seed {seed}, last evaluation; the first test window of each device. {legend}</p>",
    ]
    for (method, device), r in sorted(last.items()):
        sample = r["sample"]
        parts.append(f"<h2>{html.escape(method)} · device {device} (round {r['round']}, "
                     f"experts per layer: {r['n_experts'][0] if len(set(r['n_experts'])) == 1 else r['n_experts']})</h2>")
        for layer in pick_layers(len(sample["top1"]), layers):
            spans = "".join(
                f'<span class="tok" style="background:{EXPERT_COLOURS[int(e) % len(EXPERT_COLOURS)]}" '
                f'title="expert {int(e)}">{html.escape(piece)}</span>'
                for piece, e in zip(sample["pieces"], sample["top1"][layer])
            )
            parts.append(f'<div class="layer"><span class="lab">layer {layer}</span>{spans}</div>')
    if not last:
        parts.append("<p>No routing records: run with <code>--set training.save_routing=true</code>.</p>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="folder for the figures (default: the run directory)")
    parser.add_argument("--by-device", action="store_true", help="Figure 4: one row per method and device")
    parser.add_argument("--layers", help="Figure 5: comma-separated layer indices (default: up to 12 of them)")
    args = parser.parse_args(argv)
    records = read_routing(args.run_dir)
    if not records:
        print(f"{args.run_dir}: no routing.jsonl records; run the scenario with "
              "--set training.save_routing=true (only methods with routers write any)", file=sys.stderr)
        return 2
    out = args.out or args.run_dir
    out.mkdir(parents=True, exist_ok=True)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    print(figure4(records, out / "routing_fig4.png", args.by_device))
    print(figure5(records, out / "routing_tokens.html", layers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
