"""Dry mode (`training.dry: true`): the simulated world at full scale, with no learning at all.

`DryWorkload` answers the engine's cost questions exactly as the real method would — bytes from
the adapter tensors' shapes in the travel dtype, FLOPs from `simfed.learn.flops` — but trains,
aggregates and evaluates nothing. The model is never loaded: `model_dims` reads the card's
transformers config and builds the network on PyTorch's `meta` device (shapes, no storage) to
read the LoRA sites' dimensions the same way `AdaptedModel` does. Where the config comes from:

- `source.kind: config` cards: the card's own `source.config`;
- `gguf_package` / `pretrained` cards: `~/.cache/simfed/models/<name>/config.json` (written by the
  first real load; `$SIMFED_CACHE` moves it); if absent, the model is loaded once to read it.

Every cost comes from the method class's own rules, not a copy of them: the device's shape from
the one sizing rule (`simfed.learn.matching.device_shape`, with the real run's `shrink_search`),
the payload from the class (`ShapeCosts.payload_numel`), FLOPs and activation traffic from
`simfed.learn.flops.recipe_round_flops`, memory from `simfed.learn.memory`. So for every device and
round, download/upload bytes, FLOPs and memory equal what the real method reports
(tests/run/test_dry.py checks every dry kind on tiny-gpt2). Supported kinds: those whose class
declares `ShapeCosts` (`dry_kinds()`: comigs, hetlora, fedavg, local). What dry mode cannot know,
because it depends on training: HetLoRA's self-pruning (a dry device keeps its initial rank, so
its bytes are those of a run that never prunes).

Outputs: events.jsonl, trace.json and summary.json as usual (`training_calls` is 0); metrics.csv
holds one `mean` row per evaluation round (every `eval_every` rounds and the last), with the
cumulative bytes up/down, energy and sim time, and ppl/acc NaN (nothing is evaluated).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import torch

from simfed.errors import SimfedError
from simfed.learn.adapters import AdapterShape
from simfed.learn.base_model import cache_root, load_base_model
from simfed.learn.flops import ModelDims, recipe_round_activation_bytes, recipe_round_flops
from simfed.learn.lora import linear_dims
from simfed.learn.matching import device_shape
from simfed.learn.memory import DTYPE_BYTES, memory_need, shrink_search
from simfed.learn.merge_flops import mean_flops
from simfed.learn.methods.base import ShapeCosts
from simfed.learn.methods.common import recipe_for
from simfed.learn.methods.registry import can, kinds_with, method_class
from simfed.learn.model_card import ModelCard, load_card
from simfed.learn.saved_tensors import kept_per_element
from simfed.learn.spec import MethodSpec, TrainingSpec
from simfed.run.observers import RunObserver
from simfed.run.payload import element_size
from simfed.run.results import RunDirectory
from simfed.run.simulate import Stage, finish, method_stats, simulate
from simfed.sim.accounting import Tally
from simfed.sim.fleet import DeviceProfile, build_fleet
from simfed.sim.workload import RoundCost


def card_config(card: ModelCard) -> Any:
    """The card's transformers config, without loading weights where it can (see the module doc)."""
    from transformers import AutoConfig

    if card.source.kind == "config":
        cfg = dict(card.source.config or {})
        return AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    cached = cache_root() / "models" / card.name / "config.json"
    if cached.exists():
        return AutoConfig.from_pretrained(cached.parent)
    return load_base_model(card, "cpu").model.config  # no cache yet: load once (this also writes the cache)


def _module(root: torch.nn.Module, path: str) -> torch.nn.Module:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def model_dims(card: ModelCard) -> ModelDims:
    """`ModelDims` of the card's model from its config alone (a `meta`-device skeleton: no memory)."""
    from transformers import AutoModelForCausalLM

    config = card_config(card)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    layers = _module(model, card.layers)
    layer = layers[0]
    mlp = _module(layer, card.mlp.module)
    n_heads = int(config.num_attention_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // n_heads)
    return ModelDims(
        n_layers=len(layers),
        d_model=int(config.hidden_size),
        d_attn=n_heads * head_dim,
        vocab=int(config.vocab_size),
        attn_linears=tuple(tuple(linear_dims(_module(layer, path))) for path in card.attention),
        mlp_up=tuple(tuple(linear_dims(_module(mlp, name))) for name in card.mlp.up),
        mlp_down=tuple(linear_dims(_module(mlp, card.mlp.down))),
        mlp_act_kept=kept_per_element(_module(mlp, card.mlp.activation)),  # weightless: meta answers
    )


def dry_kinds() -> tuple[str, ...]:
    """The built-in kinds dry mode supports: those whose class declares `ShapeCosts`."""
    return kinds_with(ShapeCosts)


@dataclass(frozen=True)
class DryMethod:
    """One method's costs as a function of a device's budget, from the shapes alone: the method
    class's own payload rule (`ShapeCosts.payload_numel`), sizing rule (`device_shape`), FLOPs
    rule (`recipe_round_flops`) and memory rule, without building the method."""

    spec: MethodSpec
    training: TrainingSpec
    dims: ModelDims
    memory_policy: str = "ignore"
    weight_bytes: int = 4  # the card's dtype (simfed/learn/memory.py); activations alike (dry mode: no autocast)

    def __post_init__(self) -> None:
        if not can(self.spec.kind, ShapeCosts):
            raise SimfedError(f"method {self.spec.name!r}: dry mode supports {', '.join(dry_kinds())}, "
                              f"not {self.spec.kind!r} (its class does not declare ShapeCosts)")

    def shape(self, device: DeviceProfile) -> AdapterShape:
        """The device's adapters, by the same rule as the real method's `setup` (and, with
        memory_policy shrink, the same search for the memory figure at which the training fits)."""
        memory, speed = float(device.memory_bytes), device.flops_per_s
        if self.memory_policy == "shrink":
            (memory,) = shrink_search([memory], [device.memory_bytes],
                                      lambda figures: [self.need(device_shape(self.spec, figures[0], speed))])
        return device_shape(self.spec, memory, speed)

    def need(self, shape: AdapterShape) -> int:
        """Bytes a device needs to train `shape` (simfed/learn/memory.py)."""
        t = self.training
        return memory_need(self.dims, shape, t.batch_size, t.seq_len, self.weight_bytes).total

    def payload_numel(self, shape: AdapterShape) -> int:
        """Elements of the tensors a device downloads (and uploads: the same for these methods)."""
        return method_class(self.spec.kind).payload_numel(self.spec, self.dims, shape)

    def round_flops(self, shape: AdapterShape, global_step: int) -> float:
        return recipe_round_flops(self.dims, shape, recipe_for(self.spec, self.training), global_step)

    def round_activation_bytes(self, shape: AdapterShape, global_step: int) -> float:
        return recipe_round_activation_bytes(self.dims, shape, recipe_for(self.spec, self.training), global_step)


@dataclass
class DryWorkload:
    """The engine's `Workload` in dry mode: real costs, no learning (see the module doc)."""

    method: DryMethod
    fleet: list[DeviceProfile]
    scenario: Any  # Scenario
    seed: int
    run: RunDirectory
    tally: Tally
    steps: dict[int, int] = field(default_factory=dict)  # device -> expert steps it has run (router phases)
    training_calls: int = 0  # always 0: dry mode never trains
    _server_numel: int | None = field(default=None, repr=False)  # elements of the server's tensors, found once

    def __post_init__(self) -> None:
        size = element_size(self.scenario.training.payload_dtype)
        self._bytes = lru_cache(maxsize=None)(lambda shape: self.method.payload_numel(shape) * size)
        # a device's shape is fixed for the run; under shrink it takes a search, done once per device
        # (without shrink it is a few arithmetic operations, cheaper than a cache of 100,000 entries)
        shrinks = self.method.memory_policy == "shrink"
        self._shape = lru_cache(maxsize=None)(self.method.shape) if shrinks else self.method.shape

    @property
    def name(self) -> str:
        return self.method.spec.name

    def cost(self, device: int, round_index: int) -> RoundCost:
        shape = self._shape(self.fleet[device])
        nbytes = self._bytes(shape)
        step = self.steps.get(device, 0)
        return RoundCost(nbytes, nbytes, self.method.round_flops(shape, step),
                         self.method.round_activation_bytes(shape, step))

    def memory_need(self, device: int) -> int:
        """Bytes the device needs to train its shape (simfed/learn/memory.py)."""
        return self.method.need(self._shape(self.fleet[device]))

    def aggregation_flops(self, devices: list[int]) -> float:
        """A weighted mean of the server's tensors over the merged updates, as the real methods of
        DRY_KINDS count it (simfed/learn/merge_flops.py): the server holds the largest payload of the
        fleet (HetLoRA: the highest rank, to which every update is padded)."""
        if self._server_numel is None:
            self._server_numel = max(self.method.payload_numel(self._shape(p)) for p in self.fleet)
        return mean_flops(len(devices), self._server_numel)

    def on_download(self, device: int, round_index: int) -> None:
        pass

    def on_compute_done(self, device: int, round_index: int) -> None:
        # the step counter a real device would have advanced (it decides when router phases come)
        self.steps[device] = self.steps.get(device, 0) + self.scenario.training.local_steps

    def on_aggregate(self, round_index: int, devices: list[int], weights: list[float] | None = None) -> None:
        pass

    def on_round_end(self, round_index: int, sim_time_s: float) -> None:
        rounds, done = self.scenario.world.server.rounds, round_index + 1
        if done % self.scenario.training.eval_every == 0 or done == rounds:
            t = self.tally
            self.run.log_evaluation(self.name, self.seed, done, sim_time_s, t.bytes_up, t.bytes_down, t.energy_j,
                                    per_device={})


def run_dry(scenario: Any, out_root: Path, seeds: list[int], observers: Sequence[RunObserver] = ()) -> Path:
    """`run_scenario` in dry mode: no model weights, no data, no federation; same outputs, the same
    observers (no `Evaluated`: nothing is evaluated)."""
    from simfed.report.plots import plot_closed_run
    from simfed.report.targets import record_targets
    from simfed.run.loggers import scenario_observers
    from simfed.run.trace import TraceWriter

    card = load_card(scenario.model)
    dims = model_dims(card)
    weight_bytes = DTYPE_BYTES[card.dtype]
    methods = [DryMethod(spec, scenario.training, dims, scenario.world.memory_policy, weight_bytes)
               for spec in scenario.methods]
    run = RunDirectory.create(out_root, scenario.name, scenario.resolved_yaml(), seeds)
    try:
        with run, TraceWriter(run.path / "trace.json") as trace, scenario_observers(scenario, run.path) as own:
            _run_dry_seeds(scenario, methods, seeds, run, [*observers, *own.loggers, trace, *own.plugins])
    finally:
        record_targets(run)
        plot_closed_run(run)
    return run.path


def _run_dry_seeds(scenario: Any, methods: list[DryMethod], seeds: list[int], run: RunDirectory,
                   watchers: list[RunObserver]) -> None:
    """Every dry method for every seed: the one run loop (simfed/run/simulate.py), cost-only workload."""
    for seed in seeds:
        fleet = build_fleet(scenario.world, seed)
        for method in methods:
            name = method.spec.name
            stage = Stage(scenario, fleet, seed, run, tuple(w.observer(name, seed) for w in watchers))
            tally = Tally()
            workload = DryWorkload(method, fleet, scenario, seed, run, tally)
            engine = simulate(stage, name, workload, tally, stage.observers)
            finish(stage, name, engine, method_stats(stage, tally, engine, {"training_calls": 0}))
