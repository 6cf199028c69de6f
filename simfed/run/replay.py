"""The workload of a resumed method: replay the checkpoint's cost log, then hand over to the live one.

The simulated world cannot be saved, only rebuilt (simfed/run/checkpoint.py): the engine runs
again from t = 0, and `Replay` answers its questions as the interrupted run did — each `cost()`
from the costs log, in order; each `screen()` from the divergence guard's record — while doing no
learning and writing nothing. At the checkpointed round's end it checks that the rebuilt world
reached the checkpoint's tally, gives the live workload its `InFlight` value back, and `Handover`
drives the live workload from then on. The live workload never hears of the replay.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable

from simfed.run.checkpoint import ResumeError, SavedRound
from simfed.run.replay_check import fingerprint_change, tally_change, world_fingerprint
from simfed.run.workload import MethodWorkload
from simfed.sim.events import SimEvent
from simfed.sim.workload import RoundCost


class Replay:
    """The engine's `Workload` while it re-runs the rounds up to `saved.round`'s end."""

    def __init__(self, saved: SavedRound, live: MethodWorkload):
        self.saved, self.live = saved, live
        self.round = saved.round
        self.queue = deque(saved.costs)
        self.done = False  # the checkpointed round has ended: the live workload holds the state

    def check_world(self, world: Any, label: str) -> None:
        """Before replaying: the world's inputs beyond the scenario must be those checkpointed."""
        change = fingerprint_change(self.saved.world, world_fingerprint(world))
        if change is not None:
            raise ResumeError(f"resume: {label}: {change}")

    def cost(self, device: int, round_index: int) -> RoundCost:
        if not self.queue:
            raise ResumeError("resume: the replay asks for more costs than the run recorded "
                              "(the scenario or simfed changed since the run started?)")
        d, r, down, up, flops, *traffic = self.queue.popleft()  # traffic: absent in older cost logs
        if (d, r) != (device, round_index):
            raise ResumeError(f"resume: the replay picks device {device} in round {round_index}, the run "
                              f"picked device {d} in round {r} (the scenario or simfed changed?)")
        return RoundCost(down, up, flops, traffic[0] if traffic else 0.0,
                         traffic[1] if len(traffic) > 1 else None)  # kept_share: absent in older cost logs

    def memory_need(self, device: int) -> int | None:
        return self.live.memory_need(device)  # the method's, set up as in the interrupted run

    def aggregation_flops(self, devices: list[int]) -> float:
        return self.live.aggregation_flops(devices)  # from the shapes set up as in the interrupted run

    def on_download(self, device: int, round_index: int) -> None:
        pass

    def on_compute_done(self, device: int, round_index: int) -> None:
        pass

    def screen(self, round_index: int, devices: list[int]) -> list[int]:
        """The reports the server refused as non-finite in this round, as the run recorded."""
        refused = set(self.saved.flight.screened)
        return [d for d in devices if (round_index, d) in refused]

    def on_aggregate(self, round_index: int, devices: list[int], weights: list[float] | None = None) -> None:
        pass

    def on_round_end(self, round_index: int, sim_time_s: float) -> None:
        if round_index == self.round:
            self._finish()

    def _finish(self) -> None:
        """The checkpointed round has ended: the live workload takes over for real from here."""
        if self.queue:
            raise ResumeError(f"resume: {len(self.queue)} recorded costs were not replayed")
        live = self.live
        change = tally_change(self.saved.tally, live.tally)
        if change is not None:
            raise ResumeError(f"resume: {live.method.name} seed {live.seed}: the replay ends round {self.round} "
                              f"with {change} (the scenario's world, its data files or simfed changed?)")
        live.restore(self.saved.flight)
        self.saved.restore_rng()
        self.done = True


class Handover:
    """The engine's `Workload` for a resumed method: `replay` until it is done, then `live`.

    Observers wrapped by `unless_replaying` stay silent while the replay runs: its events are
    already in events.jsonl and the trace."""

    def __init__(self, replay: Replay, live: MethodWorkload):
        self.replay, self.live = replay, live

    @property
    def replaying(self) -> bool:
        return not self.replay.done

    @property
    def now(self) -> Replay | MethodWorkload:
        return self.replay if self.replaying else self.live

    def cost(self, device: int, round_index: int) -> RoundCost:
        return self.now.cost(device, round_index)

    def memory_need(self, device: int) -> int | None:
        return self.now.memory_need(device)

    def aggregation_flops(self, devices: list[int]) -> float:
        return self.now.aggregation_flops(devices)

    def on_download(self, device: int, round_index: int) -> None:
        self.now.on_download(device, round_index)

    def on_compute_done(self, device: int, round_index: int) -> None:
        self.now.on_compute_done(device, round_index)

    def screen(self, round_index: int, devices: list[int]) -> list[int]:
        return self.now.screen(round_index, devices)

    def on_aggregate(self, round_index: int, devices: list[int], weights: list[float] | None = None) -> None:
        self.now.on_aggregate(round_index, devices, weights)

    def on_round_end(self, round_index: int, sim_time_s: float) -> None:
        self.now.on_round_end(round_index, sim_time_s)

    def unless_replaying(self, observe: Callable[[SimEvent], None]) -> Callable[[SimEvent], None]:
        """`observe`, silent while replaying."""
        return lambda event: None if self.replaying else observe(event)
