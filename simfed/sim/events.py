"""What the engine tells its observers: one `SimEvent` per thing that happens in the world.

Every event has `t` (sim seconds), `kind`, `round` and `device` (None for the server's events).
The resource totals can be recomputed from the stream alone; each unit is carried exactly once:

    kind            device  numbers it carries
    round_start     -       target (updates the round waits for), eligible (online & idle
                            devices), selected (how many were picked), deadline_s
    selected        d       -
    download_start  d       planned_bytes, planned_s                          (plan, not a total)
    download_end    d       bytes (received), seconds, energy_j               -> bytes_down, energy
    compute_start   d       planned_flops, planned_s                          (plan, not a total)
    compute_end     d       flops, seconds, energy_j                          -> compute, energy
    upload_start    d       planned_bytes, planned_s                          (plan, not a total)
    upload_end      d       bytes (sent), seconds, energy_j                   -> bytes_up, energy
    dropped         d       phase (download|compute|upload), reason (hazard|offline) and the
                            part of the interrupted phase done before the cut: bytes (received if
                            phase=download, sent if upload; absent for compute), flops (compute
                            only), seconds (elapsed in the phase), energy_j
                                                                              -> bytes, compute, energy
                            plus the device's spend in this round that is wasted (all of it, but
                            cut mid-upload under world.waste: by_method only the share the next
                            download overwrites): wasted_bytes, wasted_compute_s, wasted_energy_j
                                                                              -> wasted
                            recovery_s (hazard, with a recovery): offline this long from the cut;
                            slot_held_s (async, with client_timeout_s): its slot stays taken
    straggler       d       follows its upload_end when the round had closed; late_s (after the
                            close), and wasted_bytes / wasted_energy_j = that upload's bytes and
                            energy plus, under world.waste: by_method, the share (1 - kept_share)
                            of its download and compute that the next download overwrites;
                            wasted_compute_s = that share of its compute      -> wasted
                            With server.late_reports: refuse it follows compute_end instead:
                            reason "refused", seconds = the one round trip of the check-in,
                            energy_j (that round trip), nothing uploaded      -> energy, wasted
    stale           d       async only: follows its upload_end when the update is staler than
                            max_staleness; staleness, and wasted_* as for a straggler -> wasted
    diverged        d       the server refuses the device's update at the merge: a non-finite
                            upload or training loss (reason "non_finite"); it is left out of the
                            `aggregated` event that follows; its bytes and energy were spent
                            (counted by its *_end events), wasted_* = that round's spend -> wasted
    aggregated      -       devices (sorted ids whose update the server merges), count;
                            async also: stalenesses and weights (1/sqrt(1+s)), in the order of devices;
                            when the merge takes time (server.flops_per_s): flops, seconds, and
                            the event comes when the merge ends (t = the round's close + seconds)
                                                                              -> server compute
    round_end       -       reason (target|deadline|abandoned; async: buffer), aggregated, selected,
                            duration_s; abandoned (fewer than server.min_reports reports): count =
                            the reports it had, nothing merged, no aggregated event

Asynchronous policies (fedbuff, fedasync): a round is one aggregation, i.e. one model version;
round_start comes when the version becomes current (target = the buffer size K; `selected` and
`deadline_s` unset), and a device's events carry the version it downloaded as their `round`.

With a server capacity (server.ingress_mbps / egress_mbps) a transfer's `planned_s` is its time on
the device's link alone, and its *_end `seconds` the time it really took.

So: bytes_down = sum(bytes) over download_end and dropped with phase=download; bytes_up likewise
with upload; energy_j = sum(energy_j) over all events; compute seconds = sum(seconds) over
compute_end and dropped with phase=compute; wasted_* = sum over dropped, straggler, stale and diverged. Bytes
count what moved: a cut transfer counts the whole bytes that had arrived when it was cut
(after the latency, at the link's rate). Work still in flight when the run stops appears only
up to its last *_end event.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

Kind = Literal[
    "round_start", "selected", "download_start", "download_end", "compute_start", "compute_end",
    "upload_start", "upload_end", "dropped", "straggler", "stale", "diverged", "aggregated", "round_end",
]
Phase = Literal["download", "compute", "upload"]


@dataclass(frozen=True)
class SimEvent:
    t: float  # sim time, seconds
    kind: Kind
    round: int  # round index, from 0
    device: int | None = None  # device id; None for the server's events
    phase: Phase | None = None  # dropped: the phase cut
    reason: str | None = None  # dropped: hazard|offline; round_end: target|deadline
    bytes: int | None = None  # bytes moved by this transfer (or its cut part)
    flops: float | None = None  # FLOPs executed (or the cut part)
    seconds: float | None = None  # duration of the step (or its cut part), sim seconds
    energy_j: float | None = None  # energy of the step (or its cut part), joules
    planned_bytes: int | None = None  # *_start: the transfer's size
    planned_flops: float | None = None  # compute_start: the work's size
    planned_s: float | None = None  # *_start: how long the step will take if not cut
    wasted_bytes: int | None = None  # dropped / straggler: bytes spent for nothing
    wasted_compute_s: float | None = None  # dropped / straggler: compute seconds spent for nothing
    wasted_energy_j: float | None = None  # dropped / straggler: joules spent for nothing
    late_s: float | None = None  # straggler: how long after the round's close it arrived
    devices: tuple[int, ...] | None = None  # aggregated: the devices merged
    count: int | None = None  # aggregated: len(devices)
    target: int | None = None  # round_start: updates the round waits for
    eligible: int | None = None  # round_start: online and idle devices at the start
    selected: int | None = None  # round_start / round_end: devices picked
    aggregated: int | None = None  # round_end: updates merged
    deadline_s: float | None = None  # round_start: the round's reporting window, seconds
    duration_s: float | None = None  # round_end: close - start, seconds
    staleness: int | None = None  # stale: server version at arrival - version downloaded
    stalenesses: tuple[int, ...] | None = None  # aggregated (async): each merged update's staleness
    weights: tuple[float, ...] | None = None  # aggregated (async): each merged update's weight, 1/sqrt(1+s)
    recovery_s: float | None = None  # dropped (hazard, dropout.recovery_mean_s > 0): offline this long from the cut
    slot_held_s: float | None = None  # dropped (async, server.client_timeout_s): the slot stays taken this long from the cut

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: `t`, `kind`, `round`, `device` always; other fields only when set."""
        out: dict[str, Any] = {"t": self.t, "kind": self.kind, "round": self.round, "device": self.device}
        for f in fields(self)[4:]:
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out
