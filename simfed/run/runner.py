"""The run recipe: load, build, simulate, measure, save — for every seed × method.

This is the only module that joins the simulated world (`simfed.sim`) and the learning
(`simfed.learn`). `MethodWorkload` is the adapter between them: it answers the engine's cost
questions from the method's shapes and FLOPs model, and does the real training when the engine
reaches a device's compute-end event.

Common random numbers: for a seed, every method sees the same fleet (`build_fleet`), the same
users' data (`build_federation`) and — through the engine's per-(seed, purpose, device, round)
streams — the same availability, dropout and noise draws.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from simfed.config import Scenario
from simfed.data.federated import UserData, build_federation
from simfed.learn.adapters import AdaptedModel
from simfed.learn.base_model import load_base_model
from simfed.learn.evaluate import evaluate_windows, evaluation_windows
from simfed.learn.methods.base import Budget, ClientInfo, LocalPlan, Method, Update
from simfed.learn.methods.registry import build_method
from simfed.learn.model_card import load_card
from simfed.run.dry import run_dry
from simfed.run.payload import payload_bytes, shapes_bytes, travel
from simfed.run.results import RunDirectory
from simfed.run.trace import TraceWriter
from simfed.sim.accounting import Tally
from simfed.sim.engine import Engine
from simfed.sim.events import SimEvent
from simfed.sim.fleet import DeviceProfile, build_fleet
from simfed.sim.workload import RoundCost


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


@dataclass
class Evaluation:
    """Per-device (ppl, acc) of one evaluation."""

    per_device: dict[int, tuple[float, float]]

    @property
    def mean_ppl(self) -> float:
        return sum(p for p, _ in self.per_device.values()) / len(self.per_device)


@dataclass
class MethodWorkload:
    """The engine's `Workload`, implemented over one `Method` for one seed."""

    method: Method
    scenario: Scenario
    seed: int
    run: RunDirectory
    tally: Tally
    view: Any
    pending: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    updates: dict[int, tuple[int, Update]] = field(default_factory=dict)  # device → (round, update)
    training_calls: int = 0  # real local updates run (a device that drops before compute end runs none)
    n_clients: int = 0

    @property
    def dtype(self) -> str:
        return self.scenario.training.payload_dtype

    def cost(self, device: int, round_index: int) -> RoundCost:
        return RoundCost(
            download_bytes=shapes_bytes(self.method.download_shapes(device), self.dtype),
            upload_bytes=shapes_bytes(self.method.upload_shapes(device), self.dtype),
            flops=self.method.round_flops(device),
        )

    def on_download(self, device: int, round_index: int) -> None:
        self.pending[device] = travel(self.method.download(device), self.dtype)

    def on_compute_done(self, device: int, round_index: int) -> None:
        expected = shapes_bytes(self.method.upload_shapes(device), self.dtype)
        plan = LocalPlan(round_index, self.scenario.world.server.rounds, self.seed)
        update = self.method.local_update(device, self.pending.pop(device), plan)
        self.training_calls += 1
        sent = payload_bytes(update.upload, self.dtype)
        if sent != expected:  # the engine already charged `expected` bytes: they must agree
            raise RuntimeError(f"{self.method.name}: device {device} uploads {sent} bytes, costed {expected}")
        upload = travel(update.upload, self.dtype)
        self.updates[device] = (round_index, Update(device, upload, update.n_tokens, update.train_loss, update.extra))

    def on_aggregate(self, round_index: int, devices: list[int]) -> None:
        accepted = [self.updates.pop(d)[1] for d in devices]
        # updates of this round that did not make it (stragglers) are never merged later
        for d in [d for d, (r, _) in self.updates.items() if r <= round_index]:
            del self.updates[d]
        self.method.aggregate(accepted, round_index)

    def on_round_end(self, round_index: int, sim_time_s: float) -> None:
        rounds = self.scenario.world.server.rounds
        done = round_index + 1
        if done % self.scenario.training.eval_every == 0 or done == rounds:
            self.log(done, sim_time_s, evaluate_all(self.method, self.n_clients))

    def log(self, round_done: int, sim_time_s: float, evaluation: Evaluation) -> None:
        t = self.tally
        row = self.run.log_evaluation(
            self.method.name, self.seed, round_done, sim_time_s, t.bytes_up, t.bytes_down, t.energy_j,
            per_device=evaluation.per_device,
        )
        self.view.on_metrics(self.method.name, round_done, row["ppl"], row["acc"])


def evaluate_all(method: Method, n_clients: int) -> Evaluation:
    results = {}
    for c in range(n_clients):
        r = method.evaluate(c, "test")
        results[c] = (r.ppl, r.acc)
    return Evaluation(results)


def evaluate_pretrained(model: AdaptedModel, users: list[UserData], seq_len: int, n_windows: int) -> Evaluation:
    """Every device's test metrics on the bare base model.

    Every method starts from adapters whose LoRA B is zero, which leave the base model's function
    unchanged exactly, so this is also each method's round-0 evaluation: computed once per seed.
    """
    results = {}
    for c, user in enumerate(users):
        r = evaluate_windows(model, None, evaluation_windows(user.test, seq_len, n_windows))
        results[c] = (r.ppl, r.acc)
    return Evaluation(results)


def clients_of(fleet: list[DeviceProfile], users: list[UserData]) -> list[ClientInfo]:
    return [ClientInfo(d.device_id, Budget(float(d.memory_bytes), d.flops_per_s), users[d.device_id]) for d in fleet]


def run_scenario(scenario: Scenario, scenario_path: Path, out_root: Path | None, seeds: list[int], view: Any) -> Path:
    """Run every method of `scenario` for every seed; returns the run directory."""
    training = scenario.training
    out_root = Path(out_root or scenario.output.dir)
    if training.dry:  # systems only: no weights, no data, no training (simfed/run/dry.py)
        return run_dry(scenario, out_root, seeds, view)
    if training.threads:
        torch.set_num_threads(training.threads)
    base = load_base_model(load_card(scenario.model), pick_device(training.device))
    model = AdaptedModel(base)
    with (
        RunDirectory.create(out_root, scenario.name, scenario.resolved_yaml(), seeds) as run,
        TraceWriter(run.path / "trace.json") as trace,
    ):
        for seed in seeds:
            fleet = build_fleet(scenario.world, seed)
            users = build_federation(scenario.data, base.tokenizer, len(fleet), seed)
            clients = clients_of(fleet, users)
            pretrained = evaluate_pretrained(model, users, training.seq_len, training.eval_windows)
            for spec in scenario.methods:
                method = build_method(spec, training, model)
                method.setup(clients, seed)
                run_method(scenario, method, seed, fleet, pretrained, run, view, [trace.observer(spec.name, seed)])
        return run.path


def run_method(
    scenario: Scenario, method: Method, seed: int, fleet: list[DeviceProfile],
    pretrained: Evaluation, run: RunDirectory, view: Any, observers: list[Callable[[SimEvent], None]] = (),
) -> MethodWorkload:
    view.on_method_start(method.name, seed)
    tally = Tally()
    workload = MethodWorkload(method, scenario, seed, run, tally, view, n_clients=len(fleet))

    def record(event: SimEvent) -> None:
        data = event.to_dict()
        run.log_event(method.name, seed, data)
        view.on_event(method.name, data)

    workload.log(0, 0.0, pretrained)
    Engine(scenario.world, fleet, workload, seed, observers=[tally, record, *observers]).run()
    stats = tally.as_summary()
    stats["training_calls"] = workload.training_calls
    run.finish_method(method.name, seed, stats, measured_model=method.measured_model)
    view.on_method_done(method.name)
    return workload
