"""The server's refusal of non-finite updates, on the run side (issue 11 of the world model).

A local update is computed when the runner's held-back jobs run (simfed/run/runner.py); the
server decides what to merge when a round closes or a buffer fills. `DivergenceGuard` joins the
two: before the jobs run it keeps each device's state (`Method.export_client`); an update whose
upload or training loss is not finite (`simfed.learn.finite.is_finite`) is kept out of the
workload's updates and its device is put back to what it downloaded; when the engine asks the
workload to `screen` the reports of a round, the guard names the refused ones, and the engine logs
a `diverged` event for each and leaves it out of the merge. The run goes on.

What the guard refused is part of the run's history, so it is part of the live workload's
in-flight value (`InFlight.refused`, `.screened`: simfed/run/workload.py) that a checkpoint keeps,
and the resume's replay answers the engine's `screen` calls from it (simfed/run/replay.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from simfed.learn.finite import is_finite, reset_to_download

ALL_DIVERGED = "all_updates_diverged"  # a method's status when the server refused every update it saw


@dataclass
class DivergenceGuard:
    refused: dict[int, int] = field(default_factory=dict)  # device -> round of its refused update, not yet screened
    screened: list[tuple[int, int]] = field(default_factory=list)  # (round, device) the server refused, in order

    def snapshot(self, method: Any, jobs: Sequence[Any]) -> dict[int, Any]:
        """Each job's client state before it trains (packed tensors: a copy)."""
        return {job.client: method.export_client(job.client) for job in jobs}

    def admit(self, method: Any, job: Any, update: Any, before: dict[int, Any]) -> bool:
        """True for a finite update. Otherwise the device goes back to its state before the job
        with the payload it downloaded, and the update is refused."""
        if is_finite(update):
            return True
        reset_to_download(method, job.client, before.get(job.client), job.received)
        self.refused[job.client] = job.plan.round_index
        return False

    def screen(self, round_index: int, devices: Sequence[int]) -> list[int]:
        """The devices among `devices` (the reports being merged) whose update was refused."""
        out = [d for d in devices if d in self.refused]
        for d in out:
            del self.refused[d]
            self.screened.append((round_index, d))
        return out

    def forget(self, device: int) -> None:
        """The device's update will never reach the server (dropped, too stale)."""
        self.refused.pop(device, None)

    def forget_through(self, round_index: int) -> None:
        """Synchronous rounds up to `round_index` are closed: their late updates are never merged."""
        for d in [d for d, r in self.refused.items() if r <= round_index]:
            del self.refused[d]


def method_status(diverged: int, aggregated: int) -> str:
    """"ok", or ALL_DIVERGED when the server refused updates and merged none."""
    return ALL_DIVERGED if diverged > 0 and aggregated == 0 else "ok"
