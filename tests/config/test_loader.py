"""The generic YAML → pydantic loader: lines, key paths, suggestions, duplicates, overrides."""
from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, model_validator

from simfed.config import ScenarioError, load_document, read_yaml
from simfed.errors import FieldProblem, SimfedError


class _S(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Server(_S):
    deadline_s: float = Field(300.0, gt=0)  # seconds
    rounds: int = Field(10, ge=1)


class Tier(_S):
    tier: str
    count: int = Field(1, ge=1)


class Markov(_S):
    kind: Literal["markov"]
    p_on: float = Field(ge=0, le=1)


class Always(_S):
    kind: Literal["always"]


class World(_S):
    server: Server = Field(default_factory=Server)
    devices: list[Tier] = Field(min_length=1)
    availability: Markov | Always = Field(default_factory=lambda: Always(kind="always"),
                                          discriminator="kind")

    @model_validator(mode="after")
    def _known_tiers(self):
        for i, d in enumerate(self.devices):
            if d.tier not in ("phone_high", "phone_low"):
                raise FieldProblem(("devices", i, "tier"), f"unknown tier '{d.tier}'")
        return self


class Doc(_S):
    name: str
    seeds: list[int] = [0]
    world: World
    tags: dict[str, str] = {}


GOOD = """\
name: demo
seeds: [0]
world:
  server:
    deadline_s: 60
  devices:
    - tier: phone_high
      count: 3
    - tier: phone_low
"""


def write(tmp_path, text, name="doc.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def problems(tmp_path, text, overrides=()):
    p = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_document(p, Doc, overrides)
    assert isinstance(info.value, SimfedError)
    return [line.replace(str(p), "doc.yaml") for line in info.value.problems]


def test_good_document_loads(tmp_path):
    doc = load_document(write(tmp_path, GOOD), Doc)
    assert doc.world.server.deadline_s == 60
    assert [d.count for d in doc.world.devices] == [3, 1]


def test_lines_of_keys_and_items():
    data, lines = read_yaml(GOOD, "x.yaml")
    assert lines[("world", "server", "deadline_s")] == 5
    assert lines[("world", "devices", 1)] == 9
    assert lines[("world", "devices", 1, "tier")] == 9
    assert lines[()] == 1


def test_value_error_has_line_and_path(tmp_path):
    bad = GOOD.replace("deadline_s: 60", "deadline_s: 0")
    assert problems(tmp_path, bad) == [
        "doc.yaml:5: world.server.deadline_s: Input should be greater than 0"]


def test_unknown_key_suggests(tmp_path):
    bad = GOOD.replace("deadline_s: 60", "deadlin_s: 60")
    assert problems(tmp_path, bad) == [
        "doc.yaml:5: world.server.deadlin_s: unknown key (did you mean 'deadline_s'?)"]


def test_missing_key_blames_parent_mapping(tmp_path):
    bad = GOOD.replace("    - tier: phone_low\n", "    - count: 2\n")
    assert problems(tmp_path, bad) == ["doc.yaml:9: world.devices.1.tier: required key missing"]


def test_missing_top_level_key(tmp_path):
    assert problems(tmp_path, "name: x\n\nseeds: [1]\n") == ["doc.yaml:1: world: required key missing"]


def test_wrong_type_shows_input(tmp_path):
    bad = GOOD.replace("count: 3", "count: three")
    assert problems(tmp_path, bad) == [
        "doc.yaml:8: world.devices.0.count: Input should be a valid integer, "
        "unable to parse string as an integer (got 'three')"]


def test_field_problem_points_below_validator(tmp_path):
    bad = GOOD.replace("tier: phone_low", "tier: phone_mid")
    assert problems(tmp_path, bad) == ["doc.yaml:9: world.devices.1.tier: unknown tier 'phone_mid'"]


def test_union_tag_is_not_a_key(tmp_path):
    bad = GOOD + "  availability:\n    kind: markov\n    p_on: 2\n"
    assert problems(tmp_path, bad) == [
        "doc.yaml:12: world.availability.p_on: Input should be less than or equal to 1"]


def test_several_problems_one_line_each_in_file_order(tmp_path):
    bad = GOOD.replace("count: 3", "count: 0").replace("deadline_s: 60", "deadline_s: -1")
    assert problems(tmp_path, bad) == [
        "doc.yaml:5: world.server.deadline_s: Input should be greater than 0",
        "doc.yaml:8: world.devices.0.count: Input should be greater than or equal to 1",
    ]


def test_duplicate_key(tmp_path):
    bad = GOOD.replace("    deadline_s: 60\n", "    deadline_s: 60\n    rounds: 3\n    deadline_s: 9\n")
    assert problems(tmp_path, bad) == [
        "doc.yaml:7: world.server.deadline_s: duplicate key (first given at line 5)"]


def test_yaml_syntax_error(tmp_path):
    bad = GOOD.replace("    - tier: phone_low", "    - tier: [phone_low")
    assert problems(tmp_path, bad) == [
        "doc.yaml:10: YAML syntax error: expected ',' or ']', but got '<stream end>' "
        "(while parsing a flow sequence that starts at line 9)"]
    assert problems(tmp_path, "name: a\n world: 1\n") == [
        "doc.yaml:2: YAML syntax error: mapping values are not allowed here"]


def test_top_level_must_be_mapping(tmp_path):
    assert problems(tmp_path, "- a\n- b\n") == [
        "doc.yaml:1: expected a mapping of keys at the top, got list"]


def test_free_form_dict_accepts_any_key(tmp_path):
    doc = load_document(write(tmp_path, GOOD + "tags: {anything: goes}\n"), Doc)
    assert doc.tags == {"anything": "goes"}


# ---------------------------------------------------------------- --set

def test_overrides_scalar_list_index_and_flow(tmp_path):
    p = write(tmp_path, GOOD)
    doc = load_document(p, Doc, ["world.server.deadline_s=12.5", "world.devices.1.count=4",
                                 "seeds=[0, 1]", "world.server.rounds=2"])
    assert doc.world.server.deadline_s == 12.5
    assert doc.world.devices[1].count == 4
    assert doc.seeds == [0, 1]
    assert doc.world.server.rounds == 2


def test_override_creates_defaulted_section(tmp_path):
    p = write(tmp_path, GOOD.replace("  server:\n    deadline_s: 60\n", ""))
    doc = load_document(p, Doc, ["world.server.rounds=7"])
    assert doc.world.server.rounds == 7 and doc.world.server.deadline_s == 300


def test_override_unknown_key(tmp_path):
    assert problems(tmp_path, GOOD, ["world.server.deadlin_s=60"]) == [
        "--set world.server.deadlin_s=60: unknown key (did you mean 'deadline_s'?)"]


def test_override_bad_index_and_syntax(tmp_path):
    assert problems(tmp_path, GOOD, ["world.devices.5.count=1", "nokey", "seeds=[0"]) == [
        "--set world.devices.5.count=1: world.devices is a list of 2 items; '5' is not an index in it",
        "--set nokey: expected KEY.PATH=VALUE, e.g. world.server.deadline_s=60",
        "--set seeds=[0: value is not valid YAML: while parsing a flow sequence",
    ]


def test_override_invalid_value_names_the_override(tmp_path):
    assert problems(tmp_path, GOOD, ["world.server.deadline_s=0"]) == [
        "--set world.server.deadline_s=0: Input should be greater than 0"]
