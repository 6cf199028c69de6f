"""PCL, client-level collaboration (Wagner et al. 2024): devices mix their peers' models by validation perplexity.

No shared init: every device starts from its own adapters (by `match`: the paper's two averaged
MLP LoRA experts plus attention LoRA, or one LoRA) and trains locally. The devices collaborate
AFTER training in round r whenever r ≥ pcl_start and (r − pcl_start) % pcl_every == 0 (0-based
rounds; defaults 4, 2: after rounds 4, 6, 8, … — the reference's `epoch > 3 and epoch % 2 == 0`).
A round has one download and one upload, so the mix completes at the start of round r + 1:

- round r: every device that trains uploads its whole adapter state after training;
- the server only relays: round r+1's download to device i is every OTHER device's model from
  round r (`peers.<j>.<tensor name>`), i.e. N−1 models — all-to-all traffic through the server;
- device i evaluates the N models (the N−1 peers and its own) on its OWN validation split,
  W[i, j] = softmax_j(−ppl_ij), replaces its adapters with Σ_j W[i, j] θ_j, then trains as usual.
  (The models mixed are those of the end of round r, as in the reference; a mix after the run's
  last round would change nothing measured and never happens.)

Bytes: `upload_shapes` is the full model in a collaboration round and empty otherwise;
`download_shapes` is the N−1 relayed models in the round after one and empty otherwise. The
FLOPs of a collaboration round add the N forward passes over the validation windows. Peers that
did not report in round r−1 are simply absent from i's mix (the row is over who is there).
"""
from __future__ import annotations

import torch

from simfed.learn.adapters import AdaptedModel, copy_into
from simfed.learn.aggregate import softmax_neg, weighted_mean
from simfed.learn.evaluate import evaluate_windows
from simfed.learn.flops import forward_flops
from simfed.learn.matching import describe_lora, device_shape
from simfed.learn.methods.adapter_method import AdapterMethod
from simfed.learn.methods.base import ClientInfo, LocalPlan, PendingUpdate, Update
from simfed.learn.methods.federation import torch_generator
from simfed.learn.spec import PCLSpec, TrainingSpec
from simfed.learn.store import pack_states, unpack_states

State = dict[str, torch.Tensor]
PEERS = "peers."


def peer_name(client: int, name: str) -> str:
    return f"{PEERS}{client}.{name}"


def split_peers(received: State) -> dict[int, State]:
    """`peers.<j>.<name>` tensors → {j: {name: tensor}}."""
    out: dict[int, State] = {}
    for key, t in received.items():
        client, name = key[len(PEERS):].split(".", 1)
        out.setdefault(int(client), {})[name] = t
    return out


class PCL(AdapterMethod):
    spec_type = PCLSpec

    def __init__(self, spec: PCLSpec, training: TrainingSpec, model: AdaptedModel) -> None:
        super().__init__(spec, training, model, shared=lambda name: False)
        self.round = 0  # the round now running (the server's next aggregation)
        self.relay: dict[int, State] = {}  # models uploaded in the last round before a collaboration
        # per device, its last collaboration: (round, [device j …], [ppl_ij …], [W_ij …])
        self.mixing: dict[int, tuple[int, list[int], list[float], list[float]]] = {}

    def collaborates(self, round_index: int) -> bool:
        """Whether the devices mix their models after training in round `round_index`."""
        s = self.spec
        return round_index >= s.pcl_start and (round_index - s.pcl_start) % s.pcl_every == 0

    def mixes_at_start(self, round_index: int) -> bool:
        """Whether round `round_index` opens with a mix (of the models of the round before)."""
        return round_index >= 1 and self.collaborates(round_index - 1)

    def setup(self, clients: list[ClientInfo], seed: int) -> None:
        super().setup(clients, seed)  # the one sizing rule's shape everywhere (simfed/learn/matching.py)
        probe = self.fed.model.new_adapters(device_shape(self.spec, 0.0, 0.0), torch.Generator().manual_seed(0))
        self.model_shapes = {n: tuple(t.shape) for n, t in probe.views().items()}  # one device's model

    # --- what moves ----------------------------------------------------------------------------
    def _peers(self, client: int) -> list[int]:
        return sorted(j for j in self.relay if j != client) if self.mixes_at_start(self.round) else []

    def download(self, client: int) -> State:
        return {peer_name(j, n): t.clone() for j in self._peers(client) for n, t in self.relay[j].items()}

    def download_shapes(self, client: int) -> dict[str, tuple[int, ...]]:
        return {peer_name(j, n): tuple(t.shape) for j in self._peers(client) for n, t in self.relay[j].items()}

    def upload_shapes(self, client: int) -> dict[str, tuple[int, ...]]:
        if not self.collaborates(self.round):
            return {}
        return dict(self.model_shapes)

    # --- device ------------------------------------------------------------------------------
    def mix(self, client: int, peers: dict[int, State]) -> None:
        """Device `client` weighs itself and its peers by softmax(−ppl on its val split) and averages."""
        own = self.fed.store.get_or_create(client).adapters
        scratch = self.fed.model.new_adapters(self.fed.shapes[client], torch_generator(self.fed.seed, client))
        windows = self.fed.windows(client, "val")
        states, ppls, who = [], [], []
        for j in sorted([client, *peers]):
            if j == client:
                state = {n: t.detach().clone() for n, t in own.views().items()}
                ppl = evaluate_windows(self.fed.model, own, windows, self.fed.eval_batch).ppl
            else:
                state = peers[j]
                copy_into(scratch, state)
                ppl = evaluate_windows(self.fed.model, scratch, windows, self.fed.eval_batch).ppl
            states.append(state)
            ppls.append(ppl)
            who.append(j)
        weights = softmax_neg(ppls)
        copy_into(own, weighted_mean(states, weights))
        self.mixing[client] = (self.round, who, ppls, weights)

    def begin_update(self, client: int, received: State, plan: LocalPlan) -> PendingUpdate:
        if received:
            self.mix(client, split_peers(received))
        collaborates = self.collaborates(self.round)

        def whole_model(update: Update) -> Update:
            upload: State = {}
            if collaborates:
                views = self.fed.local_adapters(client).views()
                upload = {n: t.detach().clone() for n, t in views.items()}
            return Update(client, upload, update.n_tokens, update.train_loss, update.extra)

        return self.fed.begin_update(client, {}, plan).then(whole_model)

    # --- server ------------------------------------------------------------------------------
    def aggregate(self, updates: list[Update], round_index: int) -> None:
        """The server only relays: it keeps the models uploaded in a collaboration round."""
        if self.collaborates(round_index):
            self.relay = {u.client: u.upload for u in updates if u.upload}
        self.round = round_index + 1

    def aggregation_flops(self, clients: list[int]) -> float:
        """The server only relays the uploaded models: nothing to compute."""
        return 0.0

    def round_flops(self, client: int) -> float:
        flops = self.fed.round_flops(client)
        n_peers = len(self._peers(client))
        if n_peers:
            n_windows = len(self.fed.windows(client, "val"))
            flops += (n_peers + 1) * forward_flops(self.fed.dims, self.fed.shapes[client], n_windows, self.fed.recipe.seq_len)
        return flops

    def describe_client(self, client: int) -> str:
        return describe_lora(self.fed.shapes[client]) + ", PCL"

    def remote_context(self, client: int) -> dict:
        return {"round": self.round}

    def apply_remote_context(self, client: int, context: dict) -> None:
        self.round = int(context["round"])

    def remote_outcome(self, client: int) -> dict:
        mixing = self.mixing.pop(client, None)
        return {} if mixing is None else {"mixing": mixing}

    def absorb_remote_outcome(self, client: int, outcome: dict) -> None:
        if "mixing" in outcome:
            self.mixing[client] = outcome["mixing"]

    def state_dict(self) -> dict:
        state = self.fed.state_dict()
        state["meta"]["round"] = self.round
        state["meta"]["mixing"] = [[c, list(m)] for c, m in self.mixing.items()]
        pack_states("relay", self.relay, state["tensors"], state["meta"])
        return state

    def load_state_dict(self, state: dict) -> None:
        self.fed.load_state_dict(state)
        self.round = int(state["meta"]["round"])
        self.mixing = {int(c): tuple(m) for c, m in state["meta"]["mixing"]}
        self.relay = unpack_states("relay", state["tensors"], state["meta"])
