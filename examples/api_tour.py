# %% [markdown]
# # simfed from Python: run, analyse with pandas, take a device's model out
#
# A notebook-style script (`# %%` cells: open it in VS Code or Jupyter with jupytext, or run it
# as `python examples/api_tour.py`). It runs a tiny random model on the toy corpus, so it takes
# about a minute on a laptop CPU and needs no network.

# %%
import simfed

scenario = {
    "name": "api_tour",
    "model": "tiny-gpt2",  # a model card (simfed models); see the README for hub ids
    "data": {"users": ["toy:a", "toy:b"], "train_tokens": 4000, "val_tokens": 1000, "test_tokens": 1000},
    "training": {"local_steps": 4, "batch_size": 4, "seq_len": 32, "eval_windows": 8, "lr": 1.0e-2},
    "methods": [
        {"name": "fedavg", "kind": "fedavg", "rank": 4},
        {"name": "hetlora", "kind": "hetlora", "rank": 2, "min_rank": 2, "max_rank": 8},
        {"name": "comigs", "kind": "comigs", "variant": "1gxs", "rank": 4, "tau": 2, "router_steps": 1},
    ],
    "world": {
        "fleet": [
            {"count": 2, "tier": "phone_flagship", "link": "wifi_home"},
            {"count": 2, "tier": "phone_low", "link": "lte"},
        ],
        "server": {"rounds": 4, "target_per_round": 3, "over_selection": 1.3, "deadline_s": 120},
    },
    "output": {"save_models": "final"},  # keep each device's model for the export below
    "report": {"targets": [200.0]},  # time-to-target in summary.json and `simfed report`
}
result = simfed.run(scenario, out="runs")  # also: a YAML path, or a simfed.config.Scenario
print(result.path)

# %% [markdown]
# ## The metrics as a DataFrame
# One row per device per evaluation and a `mean` row; bytes and energy are cumulative.

# %%
metrics = result.metrics
means = metrics[metrics["device"] == "mean"]
print(means.pivot_table(index="round", columns="method", values="ppl"))
print(result.final()[["method", "seed", "round", "sim_time_s", "bytes_up", "ppl"]])

# %% [markdown]
# ## Events: what the simulated world did (dropouts, stragglers, bytes)

# %%
events = result.events
print(events.groupby(["method", "kind"]).size().unstack(fill_value=0))

# %% [markdown]
# ## Time to target (also in summary.json)

# %%
for method, by_target in result.summary["time_to_target"]["methods"].items():
    entry = by_target["200"]["mean"]
    print(method, f"{entry['sim_time_s']:.0f} s" if entry["reached"] else "not reached")

# %% [markdown]
# ## A device's model out of the run
# Single-LoRA methods export as PEFT adapters; CoMiGS devices load as a transformers model with
# the mixture attached (`simfed export RUN_DIR --method M --out DIR` does the same from a shell).

# %%
import torch
from peft import PeftModel
from simfed.learn.base_model import load_base_model
from simfed.learn.model_card import load_card

folder = simfed.export(result.path, "hetlora", "exported/hetlora-0", device=0)[0]
base = load_base_model(load_card("tiny-gpt2")).model
adapted = PeftModel.from_pretrained(base, str(folder))

comigs = simfed.load_device_model(result.path, "comigs", device=0)
prompt = torch.tensor([list(b"1+2=")])
print(comigs.generate(prompt, max_new_tokens=8, do_sample=False))
