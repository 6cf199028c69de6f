"""The port through which the engine asks the learning side for costs and real work.

The engine never imports torch: the runner implements `Workload` over a learning `Method`,
and engine tests implement it with a fake. Every call happens at simulated event time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class RoundCost:
    """What one device's participation in one round costs, known before any training."""

    download_bytes: int  # bytes the server sends the device
    upload_bytes: int  # bytes the device sends back if it finishes
    flops: float  # FLOPs of the device's local work this round
    activation_bytes: float = 0.0  # element-wise memory traffic of that work (0: not modelled)
    # share of this round's local training that survives the device's next download, in [0, 1]
    # (simfed/learn/survival.py: FedAvg 0, CoMiGS its private experts' share); None = not stated:
    # the old accounting (a straggler wastes its upload only, a device cut mid-upload its whole round)
    kept_share: float | None = None


class Workload(Protocol):
    """The learning side as the engine sees it."""

    def cost(self, device: int, round_index: int) -> RoundCost:
        """Bytes and FLOPs of `device` taking part in round `round_index`."""
        ...

    def on_download(self, device: int, round_index: int) -> None:
        """The server's payload for `device` is fixed now (snapshot it: aggregation may follow)."""
        ...

    def on_compute_done(self, device: int, round_index: int) -> None:
        """`device` finished its local computation: the real training happens here."""
        ...

    def on_aggregate(self, round_index: int, devices: list[int], weights: list[float] | None = None) -> None:
        """The server merges the updates of `devices` (sorted ids, arrived before the deadline).

        Synchronous rounds call it with two arguments (weights None: merge as the method does).
        The asynchronous policies pass `weights`, one per device in the same order: FedBuff's
        staleness weights 1/sqrt(1 + s), where s is how many versions the model moved on
        between the device's download and its update's arrival; `round_index` is then the
        version being merged (the model goes from version round_index to round_index + 1).
        The updates may have been trained from different versions: merge each as a change
        relative to the model that device downloaded (see on_download)."""
        ...

    # Optional: `memory_need(device) -> int | None`, the bytes `device` needs to train (None: unknown,
    # taken as fitting). The engine asks it once per device when world.memory_policy is not ignore.

    def on_round_end(self, round_index: int, sim_time_s: float) -> None:
        """The round is closed and aggregated; the runner may evaluate here."""
        ...
