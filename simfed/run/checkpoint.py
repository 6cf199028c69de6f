"""Checkpoints and `simfed run --resume RUN_DIR`: a killed run goes on from its last completed round.

The SimPy world cannot be pickled (its processes are generators), but it is deterministic given
the costs the workload reports: the clock, who is in flight, availability, dropouts and noise all
follow from the scenario, the seed and the sequence of `cost()` answers. So a checkpoint holds the
*learning* side only, and the simulated side is rebuilt by replaying the engine:

- at every round end (after that round's evaluation row) the runner saves, atomically, the
  method's `state_dict()` (server tensors, every client's adapters and optimizer states in
  safetensors, method extras such as HetLoRA's ranks or PCL's relayed models), the live
  workload's in-flight value (`InFlight`, simfed/run/workload.py: payloads downloaded by devices
  still computing — stragglers included —, updates computed but not yet merged, async bases, the
  divergence guard's record; nothing else of the workload is read), torch's RNG state, and the byte sizes of
  metrics.csv, events.jsonl and of the costs log: every `cost()` answer, in order, appended as the
  run goes;
- on resume the scenario, fleet, data and method are rebuilt as in a fresh run, the method's state
  is loaded (`load` → `SavedRound`), and the engine runs again from t = 0 driven by a `Replay`
  (simfed/run/replay.py): `cost()` answers come from the costs log, no training/aggregation/
  evaluation happens and nothing is written (only the `Tally` observes, so the cumulative
  bytes/energy/counters are rebuilt), until the checkpointed round's `on_round_end`; there the
  live workload restores the `InFlight` value, the RNG is restored, and the engine is handed over
  to the live workload, writing events and metrics exactly where the checkpoint left the files.

Method/seed pairs already finished are skipped; those not started run as usual. Layout:

    RUN_DIR/checkpoint/progress.json                      what is done, the current checkpoint
    RUN_DIR/checkpoint/seed-<s>/<i>-<method>/costs.jsonl  every cost() answer of that method/seed
    RUN_DIR/checkpoint/seed-<s>/<i>-<method>/round-<k>/   state.safetensors, client-<id>.safetensors

A client state that did not change since the previous checkpoint (the device did not train) is
hard-linked from it, so a round's checkpoint writes only the devices that trained.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from simfed.errors import SimfedError
from simfed.learn.methods.base import Update
from simfed.learn.store import pack_states, save_client_state, unpack_states
from simfed.run.replay_check import tally_record, world_fingerprint
from simfed.run.results import RunDirectory
from simfed.run.workload import InFlight
from simfed.sim.workload import RoundCost

ROOT = "checkpoint"
PROGRESS = "progress.json"
VERSION = 1


class ResumeError(SimfedError):
    """The run directory cannot be resumed (no checkpoint, or it disagrees with the replay)."""


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value), encoding="utf-8")
    os.replace(tmp, path)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _rng_state() -> dict[str, str]:
    out = {"cpu": torch.get_rng_state().numpy().tobytes().hex()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [s.numpy().tobytes().hex() for s in torch.cuda.get_rng_state_all()]
    return out


def _set_rng_state(state: dict[str, Any]) -> None:
    def tensor(hex_: str) -> torch.Tensor:
        return torch.frombuffer(bytearray.fromhex(hex_), dtype=torch.uint8).clone()

    torch.set_rng_state(tensor(state["cpu"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensor(s) for s in state["cuda"]])


class Checkpoints:
    """RUN_DIR/checkpoint/: which method/seed pairs are done, and the current method's checkpoint."""

    def __init__(self, run: RunDirectory, progress: dict[str, Any]):
        self.run = run
        self.root = run.path / ROOT
        self.progress = progress
        self._rng_restored = False

    # ------------------------------------------------------------ opening

    @classmethod
    def start(cls, run: RunDirectory) -> "Checkpoints":
        """For a fresh run: an empty progress file (a kill before the first round resumes from scratch)."""
        (run.path / ROOT).mkdir(exist_ok=True)
        checkpoints = cls(run, {"version": VERSION, "done": [], "current": None})
        checkpoints.write_progress()
        return checkpoints

    @classmethod
    def reopen(cls, run_dir: Path, seeds: list[int]) -> "Checkpoints":
        """Reopen a run directory for resuming: the files are cut back to the last checkpoint."""
        path = Path(run_dir) / ROOT / PROGRESS
        if not path.is_file():
            raise ResumeError(f"{run_dir}: cannot resume: no {ROOT}/{PROGRESS} (not a run directory, "
                              "or written by a simfed without checkpoints)")
        progress = json.loads(path.read_text(encoding="utf-8"))
        if progress.get("version") != VERSION:
            raise ResumeError(f"{path}: checkpoint version {progress.get('version')}, expected {VERSION}")
        run = RunDirectory.reopen(run_dir, seeds, progress["run"])
        checkpoints = cls(run, progress)
        checkpoints._clean_strays()
        return checkpoints

    def _clean_strays(self) -> None:
        """Drop what a kill left behind after the last progress write (newer rounds, temp dirs)."""
        current = self.progress.get("current")
        keep = (self.root / current["dir"]).resolve() if current else None
        for seed_dir in self.root.glob("seed-*"):
            for method_dir in seed_dir.iterdir():
                key = [int(method_dir.name.split("-", 1)[0]), int(seed_dir.name[len("seed-"):])]
                if key in self.progress["done"]:
                    shutil.rmtree(method_dir, ignore_errors=True)
                    continue
                for round_dir in method_dir.glob("round-*"):
                    if round_dir.resolve() != keep:
                        shutil.rmtree(round_dir, ignore_errors=True)

    # ------------------------------------------------------------ progress

    def done(self, index: int, seed: int) -> bool:
        return [index, seed] in self.progress["done"]

    def write_progress(self) -> None:
        self.progress["run"] = self.run.export_state()
        self.progress["rng"] = _rng_state()
        _write_json(self.root / PROGRESS, self.progress)

    def restore_rng_once(self) -> None:
        """Torch's global RNG as it was at the last checkpoint (matters only for code that draws
        from it, e.g. a base model with dropout); done once, where the resumed run goes live."""
        if not self._rng_restored:
            self._rng_restored = True
            if "rng" in self.progress:
                _set_rng_state(self.progress["rng"])

    def method(self, index: int, name: str, seed: int, world: Any) -> "MethodCheckpoint":
        """The checkpoints of method `index` for `seed` in `world` (the scenario's WorldSpec: its
        inputs' fingerprint goes into every checkpoint)."""
        directory = self.root / f"seed-{seed}" / f"{index}-{_safe(name)}"
        current = self.progress.get("current")
        if current and (current["index"], current["seed"]) == (index, seed):
            return MethodCheckpoint(self, index, seed, directory, current, world)
        shutil.rmtree(directory, ignore_errors=True)  # started after the last checkpoint: from scratch
        return MethodCheckpoint(self, index, seed, directory, None, world)

    def finished(self, index: int, seed: int) -> None:
        self.progress["done"].append([index, seed])
        self.progress["current"] = None
        self.write_progress()
        for method_dir in (self.root / f"seed-{seed}").glob(f"{index}-*"):
            shutil.rmtree(method_dir, ignore_errors=True)


class MethodCheckpoint:
    """One method/seed's checkpoints: the costs log, and the state saved at every round end."""

    def __init__(self, owner: Checkpoints, index: int, seed: int, directory: Path, current: dict | None, world: Any):
        self.owner, self.index, self.seed, self.dir, self.world = owner, index, seed, directory, world
        self.current = current  # the checkpoint to resume from, if any
        self.dir.mkdir(parents=True, exist_ok=True)
        costs = self.dir / "costs.jsonl"
        if current is not None:
            with open(costs, "r+b") as f:
                f.truncate(current["costs_bytes"])
        self._costs = open(costs, "a" if current is not None else "w", encoding="utf-8")
        self._previous: Path | None = self.owner.root / current["dir"] if current else None

    @property
    def round(self) -> int | None:
        """The round whose end the checkpoint to resume from was taken at (None: from scratch)."""
        return None if self.current is None else int(self.current["round"])

    def close(self) -> None:
        self._costs.close()

    # ------------------------------------------------------------ as the run goes

    def log_cost(self, device: int, round_index: int, cost: RoundCost) -> None:
        self._costs.write(json.dumps([device, round_index, cost.download_bytes, cost.upload_bytes, cost.flops,
                                      cost.activation_bytes, cost.kept_share]) + "\n")

    def save(self, round_index: int, method: Any, flight: InFlight, tally: Any) -> None:
        """Checkpoint at the end of `round_index` (after its evaluation was written): the method's
        state and the live workload's in-flight value (simfed/run/workload.py), with the tally the
        resume's replay must reach (simfed/run/replay_check.py)."""
        self._costs.flush()
        state = method.state_dict()
        tensors = {f"method.{k}": v.detach().clone().contiguous() for k, v in state["tensors"].items()}
        meta: dict[str, Any] = {"method": state["meta"]}
        meta["workload"] = _pack_flight(flight, tensors)
        meta["workload"]["world"] = world_fingerprint(self.world)  # what resume checks
        meta["workload"]["tally"] = tally_record(tally)
        meta["devices"] = {k: str(v.device) for k, v in tensors.items() if v.device.type != "cpu"}
        tensors = {k: v.cpu() for k, v in tensors.items()}

        name = f"round-{round_index:06d}"
        tmp = self.dir / (name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        clients = state["clients"]
        for client, value in clients.items():
            target = tmp / f"client-{client}.safetensors"
            before = self._previous / target.name if self._previous is not None else None
            if client not in flight.trained and before is not None and before.exists():
                _link_or_copy(before, target)  # unchanged since the previous checkpoint (whose files never change)
            elif isinstance(value, Path):  # spilled to disk: copied (a spill file is rewritten in place)
                shutil.copyfile(value, target)
            else:
                save_client_state(value, target)
        meta["clients"] = sorted(clients)
        save_file(tensors, str(tmp / "state.safetensors"), metadata={"meta": json.dumps(meta)})
        final = self.dir / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)

        owner = self.owner
        owner.progress["current"] = {
            "index": self.index, "seed": self.seed, "round": round_index,
            "dir": str(final.relative_to(owner.root)),
            "costs_bytes": os.fstat(self._costs.fileno()).st_size,
        }
        owner.write_progress()
        if self._previous is not None and self._previous.resolve() != final.resolve():
            shutil.rmtree(self._previous, ignore_errors=True)
        self._previous = final

    # ------------------------------------------------------------ resuming

    def load(self, method: Any) -> "SavedRound":
        """Load the method's state; what the resume's `Replay` (simfed/run/replay.py) needs besides."""
        assert self.current is not None
        folder = self.owner.root / self.current["dir"]
        from safetensors import safe_open

        tensors = load_file(str(folder / "state.safetensors"))
        with safe_open(str(folder / "state.safetensors"), framework="pt") as f:
            meta = json.loads(f.metadata()["meta"])
        for k, device in meta["devices"].items():
            tensors[k] = tensors[k].to(device)
        method.load_state_dict({
            "tensors": {k[len("method."):]: v for k, v in tensors.items() if k.startswith("method.")},
            "clients": {c: folder / f"client-{c}.safetensors" for c in meta["clients"]},
            "meta": meta["method"],
        })
        with open(self.dir / "costs.jsonl", encoding="utf-8") as f:
            costs = tuple(json.loads(line) for line in f)
        work = meta["workload"]
        return SavedRound(self.round, costs, _unpack_flight(work, tensors), work.get("world"), work.get("tally"),
                          self.owner.restore_rng_once)


@dataclass(frozen=True)
class SavedRound:
    """A method's checkpoint as a resume reads it back (the method's own state is loaded already)."""

    round: int  # the round whose end it was taken at
    costs: tuple[list, ...]  # every cost() answer of the run up to there, in order (the costs log)
    flight: InFlight  # the live workload's in-flight value then
    world: dict[str, str] | None  # the world's inputs' fingerprint then (None: an older checkpoint)
    tally: dict[str, Any] | None  # the replayed tally fields then (None: an older checkpoint)
    restore_rng: Callable[[], None]  # torch's RNG as checkpointed (once per resumed run)


def _pack_flight(flight: InFlight, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """`flight` as JSON metadata, its tensors added to `tensors` (the on-disk layout of version 1)."""
    work: dict[str, Any] = {"training_calls": flight.training_calls}
    pack_states("pending", dict(flight.pending), tensors, work)
    pack_states("updates", {d: u.upload for d, (_, u) in flight.updates.items()}, tensors, work)
    work["update_info"] = [[d, r, u.client, u.n_tokens, u.train_loss, u.extra] for d, (r, u) in flight.updates.items()]
    pack_states("bases", dict(flight.bases), tensors, work)
    work["guard"] = {"refused": [[d, r] for d, r in flight.refused.items()], "screened": [list(x) for x in flight.screened]}
    return work


def _unpack_flight(work: dict[str, Any], tensors: dict[str, torch.Tensor]) -> InFlight:
    """`_pack_flight` inverted."""
    uploads = unpack_states("updates", tensors, work)
    updates = {d: (r, Update(client, uploads[d], n_tokens, loss, extra))
               for d, r, client, n_tokens, loss, extra in work["update_info"]}
    guard = work.get("guard") or {"refused": [], "screened": []}
    return InFlight(
        pending=unpack_states("pending", tensors, work), updates=updates,
        bases=unpack_states("bases", tensors, work),
        refused={int(d): int(r) for d, r in guard["refused"]},
        screened=tuple((int(r), int(d)) for r, d in guard["screened"]),
        training_calls=int(work["training_calls"]),
    )
