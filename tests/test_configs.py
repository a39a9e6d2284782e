"""Configs: validated at construction (every problem at once, each naming field and value), frozen,
and round-tripped through the manifest's JSON for every registered method."""

from __future__ import annotations

import dataclasses
import json

import pytest

import softprompt as sp
from softprompt import registry
from softprompt.config import field_docs
from tests.test_exactness import CONFIGS

REGISTERED = registry.names()


def problems_of(make) -> list[str]:
    with pytest.raises(sp.ConfigError) as e:
        make()
    return e.value.problems


def test_every_problem_is_reported_at_once():
    with pytest.raises(sp.ConfigError) as e:
        sp.PromptTuningConfig(num_virtual_tokens=0, init="nope")
    assert len(e.value.problems) == 2
    n, init = e.value.problems
    assert "num_virtual_tokens=0" in n and "init='nope'" in init
    assert "2 problem(s)" in str(e.value) and "num_virtual_tokens=0" in str(e.value) and "'nope'" in str(e.value)
    assert isinstance(e.value, ValueError), "ConfigError is also a ValueError"


@pytest.mark.parametrize("make, fields", [
    (lambda: sp.PTuningConfig(num_virtual_tokens=-1, encoder="gru", encoder_hidden=1),
     ["num_virtual_tokens=-1", "encoder='gru'", "encoder_hidden=1"]),
    (lambda: sp.PrefixTuningConfig(num_virtual_tokens=5000, init="x", reparam_hidden=0),
     ["num_virtual_tokens=5000", "init='x'", "reparam_hidden=0"]),
    (lambda: sp.DeepPromptConfig(num_virtual_tokens=True, init="labels"), ["num_virtual_tokens=True", "init_labels"]),
    (lambda: sp.AdapterConfig(bottleneck=0, sites=("attn", "ffn")), ["bottleneck=0", "sites="]),
], ids=["p_tuning", "prefix_tuning", "deep_prompt", "adapter"])
def test_each_method_reports_all_its_problems(make, fields):
    found = problems_of(make)
    assert len(found) == len(fields), found
    for problem, field in zip(found, fields):
        assert field in problem


@pytest.mark.parametrize("init_text", [None, "", "   "])
def test_text_init_needs_a_text(init_text):
    (problem,) = problems_of(lambda: sp.PromptTuningConfig(init="text", init_text=init_text))
    assert "init_text" in problem


@pytest.mark.parametrize("labels", [None, ()])
def test_labels_init_needs_labels(labels):
    (problem,) = problems_of(lambda: sp.PrefixTuningConfig(init="labels", init_labels=labels))
    assert "init_labels" in problem


def int_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.type in ("int", int)]


WRONG_TYPES = [(name, field) for name in REGISTERED for field in int_fields(registry.get(name).config_cls)]


@pytest.mark.parametrize("name, field", WRONG_TYPES, ids=[f"{n}.{f}" for n, f in WRONG_TYPES])
def test_a_wrongly_typed_number_is_a_config_error_naming_the_field(name, field):
    """A string where an integer belongs is reported like any other problem (not a TypeError later)."""
    cls = registry.get(name).config_cls
    found = problems_of(lambda: cls(**{field: "12"}))
    assert any(field in p for p in found), found


def test_a_wrongly_typed_text_is_a_config_error():
    found = problems_of(lambda: sp.PromptTuningConfig(init="text", init_text=5))
    assert any("init_text" in p for p in found)


def examples() -> list:
    """A default and a non-default config of every registered method."""
    out = []
    for name in REGISTERED:
        out.append(registry.get(name).config_cls())
    out += list(CONFIGS.values())
    out.append(sp.PromptTuningConfig(num_virtual_tokens=4, init="labels", init_labels=["good", "bad"], seed=3))
    out.append(sp.DeepPromptConfig(num_virtual_tokens=2, init="text", init_text="hi there"))
    out.append(sp.AdapterConfig(bottleneck=2, sites=["mlp"]))
    return out


@pytest.mark.parametrize("config", examples(), ids=lambda c: f"{c.method}")
def test_to_dict_from_dict_round_trip(config):
    cls = type(config)
    d = config.to_dict()
    assert d["method"] == registry.for_config(config).name
    via_json = json.loads(json.dumps(d))  # the manifest stores it as JSON
    again = cls.from_dict(via_json)
    assert again == config and again.to_dict() == d
    assert hash(again) == hash(config)


@pytest.mark.parametrize("name", REGISTERED)
def test_unknown_fields_are_rejected(name):
    cls = registry.get(name).config_cls
    d = cls().to_dict()
    found = problems_of(lambda: cls.from_dict({**d, "bogus": 1, "hidden_size": 32}))
    assert any("bogus" in p and "hidden_size" in p for p in found), found
    with pytest.raises(TypeError):
        cls(bogus=1)


@pytest.mark.parametrize("name", REGISTERED)
def test_configs_are_frozen_and_fully_documented(name):
    cls = registry.get(name).config_cls
    c = cls()
    field = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(c, field, getattr(c, field))
    docs = field_docs(cls)
    undocumented = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name)]
    assert not undocumented, "field docstrings feed the CLI help"


def test_unknown_method_names_the_known_ones():
    (problem,) = problems_of(lambda: registry.get("lora"))
    assert "'lora'" in problem and "prompt_tuning" in problem
