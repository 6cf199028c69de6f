"""DataSpec: plain-string users, defaults, mixtures, source grammar errors."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from simfed.data import DataSpec, parse_source


def test_plain_strings_take_the_data_level_sizes():
    spec = DataSpec.model_validate({"users": ["de", "fr", {"source": "it", "train_tokens": 5}], "val_tokens": 7})
    assert [u.source for u in spec.users] == ["de", "fr", "it"]
    assert [(u.train_tokens, u.val_tokens) for u in spec.users] == [(100_000, 7), (100_000, 7), (5, 7)]
    assert spec.users[2].size_key(2, "train") == "data.users[2].train_tokens"
    assert "default data.val_tokens" in spec.users[2].size_key(2, "val")


def test_mixture_shapes_normalise():
    spec = DataSpec.model_validate({"users": [{"source": "toy:a", "val_source": ["toy:a", "toy:b"],
                                               "test_source": {"toy:a": 1, "toy:b": 3}}]})
    user = spec.users[0]
    assert user.mixture("train") == {"toy:a": 1.0}
    assert user.mixture("val") == {"toy:a": 0.5, "toy:b": 0.5}
    assert user.mixture("test") == {"toy:a": 0.25, "toy:b": 0.75}


@pytest.mark.parametrize("bad", [{"users": ["itt"]}, {"users": []}, {"users": ["de"], "bogus": 1},
                                 {"users": [{"source": "de", "train_tokens": 0}]},
                                 {"users": [{"source": "de", "val_source": {"fr": 0}}]}])
def test_invalid_specs_are_rejected(bad):
    with pytest.raises(ValidationError):
        DataSpec.model_validate(bad)


def test_unknown_source_names_the_choices():
    with pytest.raises(ValidationError, match="unknown source 'itt'.*built-in"):
        DataSpec.model_validate({"users": ["itt"]})


def test_source_grammar():
    ref = parse_source("hf:wikimedia/wikipedia:20231101.de?split=train&text_field=text&limit=10")
    assert (ref.kind, ref.name, ref.config, ref.split, ref.text_field, ref.limit) == (
        "hf", "wikimedia/wikipedia", "20231101.de", "train", "text", 10)
    ref = parse_source("hf:ag_news?label=2")
    assert ref.filters == (("label", "2"),) and ref.split == "train"
    assert parse_source("data/reviews.jsonl?text_field=body").kind == "local"
    assert parse_source("code").kind == "builtin" and parse_source("toy:b").kind == "toy"
