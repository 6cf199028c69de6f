"""The progress view: counters from event dicts, plain lines off a terminal, bounded redraws."""
from __future__ import annotations

import io

from rich.console import Console

from simfed.run.progress import ProgressView, clock, human_bytes


def round_events(r, t0):
    yield {"t": t0, "kind": "round_start", "round": r, "device": None, "target": 2}
    for d in (0, 1, 2):
        yield {"t": t0, "kind": "selected", "round": r, "device": d}
        yield {"t": t0 + 1, "kind": "download_end", "round": r, "device": d, "bytes": 1_000_000}
    yield {"t": t0 + 5, "kind": "upload_end", "round": r, "device": 0, "bytes": 500_000}
    yield {"t": t0 + 6, "kind": "dropped", "round": r, "device": 1, "phase": "upload", "bytes": 100}
    yield {"t": t0 + 7, "kind": "upload_end", "round": r, "device": 2, "bytes": 500_000}
    yield {"t": t0 + 7, "kind": "aggregated", "round": r, "device": None, "devices": [0, 2], "count": 2}
    yield {"t": t0 + 7, "kind": "round_end", "round": r, "device": None, "reason": "target"}
    yield {"t": t0 + 9, "kind": "straggler", "round": r, "device": 2, "late_s": 2.0}


def plain():
    out = io.StringIO()
    return out, Console(file=out, force_terminal=False, width=200)


def test_units():
    assert human_bytes(999) == "999 B" and human_bytes(1_234_567) == "1.2 MB"
    assert human_bytes(3.2e9) == "3.2 GB" and human_bytes(None) == "-"
    assert clock(3725.4) == "1:02:05" and clock(None) == "-"


def test_counters_follow_the_events():
    out, console = plain()
    view = ProgressView(["comigs", "hetlora"], rounds=5, enabled=False, console=console)
    with view:
        for e in round_events(0, 0.0):
            view.on_event("comigs", e)
    s = view.states["comigs"]
    assert (s.round, s.rounds_done, s.t) == (1, 1, 9.0)
    assert (s.bytes_down, s.bytes_up) == (3_000_000, 1_000_100)
    assert (s.dropped, s.stragglers, s.aggregated, len(s.in_flight)) == (1, 1, 2, 0)
    assert view.states["hetlora"].status == "waiting"


def test_plain_mode_one_line_per_round_with_its_evaluation():
    out, console = plain()
    now = [100.0]  # a fake host clock: the method starts at 100 s
    with ProgressView(["comigs"], rounds=3, enabled=True, console=console, wall=lambda: now[0]) as view:
        view.on_method_start("comigs")
        for r in (0, 1):
            for e in round_events(r, 100.0 * r):
                view.on_event("comigs", e)
            now[0] += 12.0 if r == 0 else 18.0  # rounds of 12 s and 18 s of wall time
            view.on_metrics("comigs", r + 1, 42.0 - r, 0.25)
        view.on_method_done("comigs")
    lines = out.getvalue().splitlines()
    assert lines == [  # ETA: 12 s a round × 2 rounds left; then 30 s / 2 rounds × 1 left
        "comigs  round 1/3  sim 0:00:09  up 1.0 MB  down 3.0 MB  aggregated 2  dropped 1  "
        "stragglers 1  ppl 42.00  wall 0:00:12  eta 0:00:24",
        "comigs  round 2/3  sim 0:01:49  up 2.0 MB  down 6.0 MB  aggregated 4  dropped 2  "
        "stragglers 2  ppl 41.00  wall 0:00:30  eta 0:00:15",
        "comigs  done: 2 rounds, sim 0:01:49, final ppl 41.00, wall 0:00:30",
    ]
    assert "\x1b" not in out.getvalue()


def test_plain_round_without_evaluation_still_prints():
    out, console = plain()
    with ProgressView(["a"], rounds=3, enabled=False, console=console) as view:
        for e in round_events(0, 0.0):
            view.on_event("a", e)
        for e in round_events(1, 50.0):
            view.on_event("a", e)
    assert [line.split("  ")[1] for line in out.getvalue().splitlines()] == ["round 1/3", "round 2/3"]


def test_a_new_seed_resets_the_counters():
    out, console = plain()
    with ProgressView(["a"], rounds=1, enabled=False, console=console) as view:
        for e in round_events(0, 0.0):
            view.on_event("a", e)
        view.on_method_done("a")
        view.on_method_start("a", seed=1)
        assert view.states["a"].bytes_down == 0 and view.states["a"].seed == 1


def test_live_mode_redraws_at_a_bounded_rate():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    view = ProgressView(["comigs", "hetlora"], rounds=500, enabled=True, console=console)
    calls = 0
    table = view.table

    def counting_table():
        nonlocal calls
        calls += 1
        return table()

    view.table = counting_table
    with view:
        assert view.live_mode
        for r in range(500):
            for e in round_events(r, 10.0 * r):
                view.on_event("comigs", e)
            view.on_metrics("comigs", r + 1, 30.0, 0.3)
        view.on_method_done("comigs")
    events = 500 * 14
    assert calls < 50 < events  # redraws follow the clock, not the events
    text = out.getvalue()
    assert "comigs" in text and "hetlora" in text and "waiting" in text and "done" in text
    assert "ETA" in text and "wall" in text


def test_print_comparison():
    out, console = plain()
    view = ProgressView([], 0, enabled=False, console=console)
    view.print_comparison({"methods": {
        "comigs": {"final_mean_ppl": 21.5, "final_mean_acc": 0.41, "rounds": 20,
                   "sim_time_s": 7200.0, "bytes_up": 2e6, "bytes_down": 4e6, "dropouts": 3,
                   "stragglers": 1, "wasted_compute_s": 60.0, "wasted_bytes": 1e5},
        "hetlora": {"final_mean_ppl": None}}})
    text = out.getvalue()
    assert "21.50" in text and "2:00:00" in text and "4.0 MB" in text and "100.0 kB" in text
    assert "hetlora" in text
