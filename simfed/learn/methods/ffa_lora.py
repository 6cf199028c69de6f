"""FFA-LoRA (Sun et al. 2024): FedAvg on LoRA with every A frozen at the shared server init.

Only B trains and only B moves. A device receives the server's A once — with the first download
that leads to a local update of it — and never sends A: its A equals the server init bit for bit
for the whole run (A is not in its optimizer, so neither gradients nor weight decay touch it).
Download = B (+ A the first time); upload = B; server: (weighted) mean of the B's (the
`AdapterMethod` mean: the server's A never changes, as no upload carries it).
Matched to CoMiGS-1G1S as in the paper (`match: paper`): the MLP LoRA has rank 2·rank (16), attention 8.
(The paper's reference code forgot to freeze A; ALGORITHMS.md asks for the real thing.)
"""
from __future__ import annotations

import torch

from simfed.learn.adapters import AdaptedModel, AdapterShape
from simfed.learn.flops import ModelDims
from simfed.learn.local_update import ADAM_BETAS, ClientState
from simfed.learn.methods.adapter_method import AdapterMethod
from simfed.learn.methods.base import ClientInfo, LocalPlan, PendingUpdate, Update
from simfed.learn.methods.federation import torch_generator
from simfed.learn.spec import FFALoRASpec, TrainingSpec
from simfed.learn.store import ClientStore


def is_lora_a(name: str) -> bool:
    return name.endswith(".lora_A")


def frozen_a_savings(dims: ModelDims, shape: AdapterShape, tokens: int) -> float:
    """FLOPs one expert step saves when every LoRA A is frozen (`flops.step_flops` assumes they train).

    Per token and A (r × in): its weight gradient, 2·r·in. In layer 0 the projections that read the
    block's input (all attention linears but the last, the output projection) see the frozen
    embeddings: with their A frozen nothing below their B needs a gradient, so B's input gradient
    (2·r·out) goes too. Checked against torch's FlopCounterMode in the tests.
    """
    per_layer = sum(2.0 * shape.attn_rank * i for i, _ in dims.attn_linears) if shape.attn_rank else 0.0
    per_layer += shape.n_experts * sum(2.0 * shape.mlp_rank * i for i, _ in (*dims.mlp_up, dims.mlp_down))
    reads_input = dims.attn_linears[:-1]  # the output projection is last in every card
    layer0 = sum(2.0 * shape.attn_rank * o for _, o in reads_input) if shape.attn_rank else 0.0
    return tokens * (dims.n_layers * per_layer + layer0)


class FFALoRA(AdapterMethod):
    spec_type = FFALoRASpec

    def __init__(self, spec: FFALoRASpec, training: TrainingSpec, model: AdaptedModel) -> None:
        super().__init__(spec, training, model, shared=lambda name: True)
        self.fed.store = ClientStore(self._fresh_state)
        self.has_a: set[int] = set()  # clients that hold the server's A

    def _fresh_state(self, client: int) -> ClientState:
        """Adapters with A frozen; AdamW over the B's only (no router: one LoRA, E = 1)."""
        fed = self.fed
        adapters = fed.model.new_adapters(fed.shapes[client], torch_generator(fed.seed, client))
        b_params = [p for n, p in adapters.named_parameters() if n.endswith("lora_B")]
        for n, p in adapters.named_parameters():
            p.requires_grad_(n.endswith("lora_B"))
        r = fed.recipe
        opt = torch.optim.AdamW(b_params, lr=r.lr, betas=ADAM_BETAS, weight_decay=r.weight_decay)
        return ClientState(adapters, opt, None)

    def setup(self, clients: list[ClientInfo], seed: int) -> None:
        super().setup(clients, seed)  # match paper: MLP rank 2·rank (simfed/learn/matching.py)
        self.fed.fresh_payload = lambda c: {n: t.clone() for n, t in self.fed.server.items()}

    def _download_names(self, client: int) -> list[str]:
        names = self.fed.shared_names(client)
        return names if client not in self.has_a else [n for n in names if not is_lora_a(n)]

    def _upload_names(self, client: int) -> list[str]:
        return [n for n in self.fed.shared_names(client) if not is_lora_a(n)]

    def download(self, client: int) -> dict[str, torch.Tensor]:
        return {n: self.fed.server[n].clone() for n in self._download_names(client)}

    def begin_update(self, client: int, received: dict[str, torch.Tensor], plan: LocalPlan) -> PendingUpdate:
        if any(is_lora_a(n) for n in received):
            self.has_a.add(client)
        elif client not in self.has_a:
            raise RuntimeError(f"FFA-LoRA: client {client} trains without ever having received the server's A")

        def without_a(update: Update) -> Update:
            upload = {n: t for n, t in update.upload.items() if not is_lora_a(n)}
            return Update(client, upload, update.n_tokens, update.train_loss, update.extra)

        return self.fed.begin_update(client, received, plan).then(without_a)

    def remote_context(self, client: int) -> dict:
        return {"has_a": client in self.has_a}

    def apply_remote_context(self, client: int, context: dict) -> None:
        (self.has_a.add if context["has_a"] else self.has_a.discard)(client)

    def remote_outcome(self, client: int) -> dict:
        return {"has_a": client in self.has_a}

    def absorb_remote_outcome(self, client: int, outcome: dict) -> None:
        self.apply_remote_context(client, outcome)

    def upload_shapes(self, client: int) -> dict[str, tuple[int, ...]]:
        return self.fed.shapes_of(client, self._upload_names(client))

    def download_shapes(self, client: int) -> dict[str, tuple[int, ...]]:
        return self.fed.shapes_of(client, self._download_names(client))

    def round_flops(self, client: int) -> float:
        r = self.fed.recipe
        saved = frozen_a_savings(self.fed.dims, self.fed.shapes[client], r.batch_size * r.seq_len)
        return self.fed.round_flops(client) - r.local_steps * saved

    def describe_client(self, client: int) -> str:
        return f"LoRA r{self.fed.shapes[client].mlp_rank}, A frozen"

    def state_dict(self) -> dict:
        state = self.fed.state_dict()
        state["meta"]["has_a"] = sorted(self.has_a)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.fed.load_state_dict(state)
        self.has_a = set(state["meta"]["has_a"])
