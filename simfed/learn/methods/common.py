"""Small pieces the concrete methods share: the recipe from the scenario, byte-free shape lookups."""
from __future__ import annotations

from simfed.learn.local_update import Recipe
from simfed.learn.spec import MethodSpec, TrainingSpec


def recipe_for(spec: MethodSpec, training: TrainingSpec) -> Recipe:
    """The local loop's numbers: the scenario's `training:` and what the method's kind sets."""
    return Recipe(
        local_steps=training.local_steps,
        batch_size=training.batch_size,
        seq_len=training.seq_len,
        lr=training.lr,
        weight_decay=training.weight_decay,
        **spec.recipe_options(),
    )


def is_attention(name: str) -> bool:
    return ".attn." in name


def is_router(name: str) -> bool:
    return ".router." in name


def expert_index(name: str) -> int | None:
    """The expert of an MLP payload name (`layers.3.mlp.experts.2.up_proj.lora_A` → 2)."""
    parts = name.split(".")
    if "experts" in parts:
        return int(parts[parts.index("experts") + 1])
    return None
