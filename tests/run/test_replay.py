"""`Replay` and `Handover` (simfed/run/replay.py) with a fake live workload: the engine is answered
from the costs log up to the checkpointed round's end, then the live workload has the in-flight
value back and answers everything."""
from __future__ import annotations

import pytest

from simfed.run.checkpoint import ResumeError, SavedRound
from simfed.run.replay import Handover, Replay
from simfed.run.workload import InFlight
from simfed.sim.accounting import Tally
from simfed.sim.workload import RoundCost

FLIGHT = InFlight(pending={}, updates={}, bases={}, refused={}, screened=((0, 1),), training_calls=7)


class FakeLive:
    def __init__(self):
        self.tally, self.seed, self.calls, self.restored = Tally(), 0, [], None
        self.method = type("M", (), {"name": "fedavg"})()

    def restore(self, flight):
        self.restored = flight

    def cost(self, device, round_index):
        self.calls.append(("cost", device, round_index))
        return RoundCost(1, 2, 3.0)

    def on_round_end(self, round_index, sim_time_s):
        self.calls.append(("end", round_index))


def saved(costs, rng):
    return SavedRound(round=0, costs=tuple(costs), flight=FLIGHT, world=None, tally=None, restore_rng=rng)


def test_the_replay_answers_from_the_log_then_hands_over_at_the_checkpointed_round():
    rng = []
    live = FakeLive()
    handover = Handover(Replay(saved([[0, 0, 10, 20, 30.0, 40.0, 0.5], [2, 0, 11, 21, 31.0]], lambda: rng.append(1)),
                               live), live)
    heard = []
    quiet = handover.unless_replaying(heard.append)
    assert handover.cost(0, 0) == RoundCost(10, 20, 30.0, 40.0, 0.5)
    assert handover.cost(2, 0) == RoundCost(11, 21, 31.0, 0.0, None)  # an older log: no traffic, no kept share
    assert handover.screen(0, [0, 1, 2]) == [1]  # refused then, as the in-flight value recorded
    quiet("replayed event")
    handover.on_round_end(0, 5.0)  # the checkpointed round: the live workload takes over
    assert live.restored is FLIGHT and rng == [1] and not handover.replaying
    assert live.calls == []  # the live workload heard nothing of the replay (nor its round end)
    quiet("live event")
    assert handover.cost(1, 1) == RoundCost(1, 2, 3.0)
    handover.on_round_end(1, 9.0)
    assert live.calls == [("cost", 1, 1), ("end", 1)] and heard == ["live event"]


def test_a_replay_that_picks_another_device_or_leaves_costs_refuses_in_one_line():
    live = FakeLive()
    replay = Replay(saved([[0, 0, 10, 20, 30.0]], lambda: None), live)
    with pytest.raises(ResumeError, match="picks device 3 in round 0, the run picked device 0 in round 0"):
        replay.cost(3, 0)
    unspent = Replay(saved([[0, 0, 10, 20, 30.0]], lambda: None), live)
    with pytest.raises(ResumeError, match="1 recorded costs were not replayed"):
        unspent.on_round_end(0, 1.0)
    assert live.restored is None
