"""Any HF causal LM without a card: four tiny random architectures saved to a directory train under
CoMiGS and HetLoRA; an architecture simfed cannot adapt is a one-line error naming what it looked for."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from simfed.learn.model_card import ModelCardError, load_card
from tests.run.conftest import run_text  # noqa: F401 - the runner tests' fixture

TEXT = ("1+2=3 4+4=8 aaa bbb ccc the quick brown fox jumps over the lazy dog 0123456789 " * 20)
SMALL = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=2)
CONFIGS = {
    "llama": dict(SMALL, num_key_value_heads=2),
    "qwen2": dict(SMALL, num_key_value_heads=2),
    "gpt2": dict(n_layer=2, n_embd=64, n_head=4, n_positions=128),
    "gpt_neox": dict(SMALL),
    "opt": dict(hidden_size=64, ffn_dim=128, num_attention_heads=4, num_hidden_layers=2, word_embed_proj_dim=64),
}


def save_tiny_model(model_type: str, folder: Path) -> Path:
    """A random model of `model_type` and a 300-token byte-level BPE tokenizer, saved like a hub folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([TEXT], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = AutoConfig.for_model(model_type, vocab_size=300, bos_token_id=eos, eos_token_id=eos, pad_token_id=None,
                                  **CONFIGS[model_type])
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {t: save_tiny_model(t, root / t) for t in CONFIGS}


SCENARIO = """
name: nocard_{tag}
model: {model}
data: {{users: [toy:a, toy:b], train_tokens: 2000, val_tokens: 500, test_tokens: 500, cache_dir: {cache}}}
training: {{local_steps: 3, batch_size: 2, seq_len: 32, eval_windows: 3, lr: 2.0e-2}}
methods:
  - {{name: comigs, kind: comigs, variant: 1g1s, rank: 4, tau: 2, router_steps: 1}}
  - {{name: hetlora, kind: hetlora, rank: 2, min_rank: 2, max_rank: 8}}
world:
  fleet: [{{count: 2, tier: phone_mid, link: wifi_home}}]
  server: {{rounds: 2, target_per_round: 2, over_selection: 1.0, deadline_s: 100000}}
"""


@pytest.mark.parametrize("model_type,layers", [
    ("llama", "model.layers"), ("qwen2", "model.layers"), ("gpt2", "transformer.h"), ("gpt_neox", "gpt_neox.layers"),
])
def test_a_card_less_model_trains_under_comigs_and_hetlora(run_text, folders, tmp_path: Path, model_type: str,
                                                           layers: str) -> None:
    from simfed.report.readers import metrics_frame

    card = load_card(str(folders[model_type]))
    assert card.layers == layers and card.source.kind == "pretrained"
    text = SCENARIO.format(tag=model_type, model=folders[model_type], cache=tmp_path / "cache")
    run = run_text(text, tmp_path / f"{model_type}.yaml", tmp_path / "runs")
    means = metrics_frame(run)
    means = means[means["device"] == "mean"]
    for method in ("comigs", "hetlora"):
        ppl = means[means["method"] == method].set_index("round")["ppl"]
        assert list(ppl.index) == [0, 1, 2] and all(math.isfinite(p) for p in ppl)
        assert ppl[2] < ppl[0]  # real training on the toy text: lower test perplexity than the random start


def test_an_architecture_it_cannot_adapt_is_one_line_naming_what_it_looked_for(folders) -> None:
    with pytest.raises(ModelCardError) as err:
        load_card(str(folders["opt"]))  # OPT: model.decoder.layers, fc1/fc2 outside an `mlp` module
    message = str(err.value)
    assert "\n" not in message and "model_type opt" in message
    for looked in ("model.layers", "transformer.h", "gpt_neox.layers", "gate_proj", "c_fc", "dense_h_to_4h", "fc1"):
        assert looked in message


def test_an_unknown_name_that_is_no_model_still_lists_the_cards() -> None:
    with pytest.raises(ModelCardError, match="known cards are .*tiny-gpt2"):
        load_card("no-such-card")
