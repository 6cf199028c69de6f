"""trace.json (Chrome trace-event format) and the PNG device timeline, from a tiny fake run.

The run (tests/sim/fakes.py): device 0 at 1 GFLOP/s downloads 0-1.25 s, computes 1.25-3.25 s,
uploads 3.25-4.5 s and closes round 0 at 4.5 s (target 1); device 1 at 0.25 GFLOP/s computes 8 s
and reports at 10.5 s, a straggler of round 0. Rounds 1 (4.5-9.0 s) and 2 (9.0-13.5 s) run with
device 0 alone.
"""
from __future__ import annotations

import json

import pytest

from simfed.report.timeline import plot_timeline, timeline_bars
from simfed.run.trace import TraceWriter, trace_from_events
from tests.sim.fakes import plain_device, run, world

US = 1_000_000


def tiny_run():
    spec = world([{"count": 2, "tier": "phone_mid", "link": "lte"}], rounds=3, target_per_round=1, over_selection=2.0)
    events, _, _, _ = run(spec, fleet=[plain_device(0), plain_device(1, flops_per_s=2.5e8)])
    return events


def test_one_complete_span_per_step_end_with_ts_and_dur_in_microseconds(tmp_path):
    events = tiny_run()
    with TraceWriter(tmp_path / "trace.json") as writer:
        observe = writer.observer("fedavg", 0)
        for e in events:
            observe(e)
    trace = json.loads((tmp_path / "trace.json").read_text())
    spans = [x for x in trace if x["ph"] == "X" and x["tid"] != 0]
    ends = [e for e in events if e.kind in ("download_end", "compute_end", "upload_end")]
    assert len(spans) == len(ends) == 12  # device 0: 3 rounds x 3 steps; device 1: 3 steps
    got = sorted((x["tid"] - 1, x["name"], x["ts"], x["dur"]) for x in spans)
    assert got == sorted([
        (0, "download", 0.0, 1.25 * US), (0, "compute", 1.25 * US, 2 * US), (0, "upload", 3.25 * US, 1.25 * US),
        (0, "download", 4.5 * US, 1.25 * US), (0, "compute", 5.75 * US, 2 * US), (0, "upload", 7.75 * US, 1.25 * US),
        (0, "download", 9 * US, 1.25 * US), (0, "compute", 10.25 * US, 2 * US), (0, "upload", 12.25 * US, 1.25 * US),
        (1, "download", 0.0, 1.25 * US), (1, "compute", 1.25 * US, 8 * US), (1, "upload", 9.25 * US, 1.25 * US),
    ])
    rounds = [(x["name"], x["ts"], x["dur"]) for x in trace if x["ph"] == "X" and x["tid"] == 0]
    assert rounds == [("round 0", 0.0, 4.5 * US), ("round 1", 4.5 * US, 4.5 * US), ("round 2", 9 * US, 4.5 * US)]
    [late] = [x for x in trace if x["ph"] == "i" and x["name"] == "straggler"]
    assert (late["tid"], late["ts"], late["args"]["late_s"]) == (2, 10.5 * US, 6.0)
    names = {x["tid"]: x["args"]["name"] for x in trace if x["name"] == "thread_name"}
    assert names == {0: "server", 1: "device 0", 2: "device 1"}


def test_the_file_is_valid_json_before_close_and_for_every_method(tmp_path):
    events = tiny_run()
    writer = TraceWriter(tmp_path / "trace.json")
    assert json.loads((tmp_path / "trace.json").read_text()) == []
    first = writer.observer("a", 0)
    for e in events:
        first(e)
    flushed = json.loads((tmp_path / "trace.json").read_text())  # not closed: as after a crash
    assert {x["pid"] for x in flushed} == {1} and any(x["name"] == "round 2" for x in flushed)
    second = writer.observer("b", 0)
    for e in events:
        second(e)
    writer.close()
    trace = json.loads((tmp_path / "trace.json").read_text())
    assert {x["pid"] for x in trace} == {1, 2} and len(trace) == 2 * len(flushed)


def test_a_dropped_step_is_a_cut_span_and_an_instant(tmp_path):
    # offline at 4.0 s, 0.75 s into device 0's upload (see tests/sim/test_rounds.py)
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"7": {"trace_start": 100.0, "trace_end": 1100.0, "ready_time": [[100.0, 104.0]]}}))
    spec = world([{"count": 1, "tier": "phone_mid", "link": "lte", "availability": {"kind": "trace", "path": str(path)}}],
                 target_per_round=1, deadline_s=10.0)
    events, _, _, _ = run(spec, fleet=[plain_device(0)])
    stream = [{"method": "m", "seed": 3, **e.to_dict()} for e in events]
    trace = json.loads(trace_from_events(stream, tmp_path / "trace.json").read_text())
    [cut] = [x for x in trace if x["name"] == "upload (cut)"]
    assert (cut["ts"], cut["dur"]) == (3.25 * US, 0.75 * US)
    [drop] = [x for x in trace if x["name"] == "dropped"]
    assert (drop["ph"], drop["ts"], drop["args"]["reason"]) == ("i", 4.0 * US, "offline")


def test_the_timeline_png_is_drawn_from_events_jsonl(tmp_path):
    events = tiny_run()
    stream = [{"method": "fedavg", "seed": 0, **e.to_dict()} for e in events]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in stream))
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    out = plot_timeline(lines, tmp_path / "timeline.png", rounds=1)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    bars, marks = timeline_bars(lines, rounds=1)  # round 0 only
    assert sorted((b.device, b.phase, b.start_s, b.seconds) for b in bars) == sorted([
        (0, "download", 0.0, 1.25), (0, "compute", 1.25, 2.0), (0, "upload", 3.25, 1.25),
        (1, "download", 0.0, 1.25), (1, "compute", 1.25, 8.0), (1, "upload", 9.25, 1.25)])
    assert [(m["kind"], m["t"]) for m in marks] == [("round_end", 4.5), ("straggler", 10.5)]


def test_an_empty_stream_still_gives_a_picture(tmp_path):
    assert plot_timeline([], tmp_path / "empty.png").exists()
    assert json.loads(trace_from_events([], tmp_path / "empty.json").read_text()) == []


@pytest.mark.parametrize("kind", ["stale"])
def test_async_instants_are_kept(tmp_path, kind):
    writer = TraceWriter(tmp_path / "trace.json")
    observe = writer.observer("m", 0)
    observe({"t": 2.0, "kind": kind, "round": 0, "device": 4, "staleness": 3})
    writer.close()
    [mark] = [x for x in json.loads((tmp_path / "trace.json").read_text()) if x["ph"] == "i"]
    assert (mark["name"], mark["tid"], mark["ts"], mark["args"]["staleness"]) == ("stale", 5, 2.0 * US, 3)
