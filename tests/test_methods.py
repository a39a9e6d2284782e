"""The method contract (softprompt/methods/base.py): every registered method follows it, callers only ask it,
and a new method is one registration away from training, saving and loading."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from torch import nn

import softprompt as sp
from softprompt import registry
from softprompt.config import Knobs, MethodConfig
from softprompt.methods.base import MethodConfigProtocol, SoftPromptMethod
from softprompt.methods.init import init_embeddings
from softprompt.model.inject import PromptParts
from softprompt.templates import Template, Verbalizer
from softprompt.training.task import Task
from softprompt.training.tune import TrainConfig, train
from tests.tiny import tiny_base

KNOBS = Knobs(num_virtual_tokens=3, seed=1, soft_template="{soft:2}{text}{soft:1}:{label}")


@pytest.fixture(scope="module")
def base():
    return tiny_base("llama")


@pytest.mark.parametrize("name", registry.names())
def test_every_method_follows_the_contract(name, base):
    config = registry.build_config(name, KNOBS)
    assert isinstance(config, MethodConfigProtocol) and type(config).method == name
    assert isinstance(type(config).default_lr, float) and 0 < type(config).default_lr < 1
    assert config.task_template() in (None, KNOBS.soft_template)
    assert type(config).from_dict(config.to_dict()) == config
    p = sp.attach(base, config)
    assert isinstance(p.prompt, SoftPromptMethod)
    parts = p.prompt.parts(base)
    assert isinstance(parts, PromptParts)
    # the config's fact agrees with what the module actually adds to a forward pass
    assert type(config).embedding_only == parts.embedding_only == registry.get(name).embedding_only
    tensors = p.prompt.export_tensors()
    assert {k: tuple(v.shape) for k, v in tensors.items()} == type(p.prompt).expected_shapes(config, base.facts)
    again = type(p.prompt).from_tensors(config, {k: v.clone() for k, v in tensors.items()})
    assert all(torch.equal(again.export_tensors()[k], v) for k, v in tensors.items())


def test_knobs_a_method_does_not_have_are_ignored_and_its_own_fields_win():
    adapter = registry.build_config("adapter", Knobs(num_virtual_tokens=7, init="text", init_text="x", seed=3))
    assert adapter == sp.AdapterConfig(seed=3)
    pt = registry.build_config("p_tuning", Knobs(num_virtual_tokens=4), encoder="lstm")
    assert pt == sp.PTuningConfig(num_virtual_tokens=4, encoder="lstm")
    assert registry.build_config("hybrid", Knobs(template="{soft:3}{text}:{label}", soft_template="{soft:1}{text}"
                                                 ":{label}")).template == "{soft:3}{text}:{label}"
    with pytest.raises(sp.InputError, match="needs a template with"):
        registry.build_config("hybrid", Knobs())
    with pytest.raises(sp.ConfigError, match="unknown"):
        registry.build_config("lora", Knobs())


# --- a new method: one registration, and the recipe, artifacts and loading work unchanged ------------------------

@dataclass(frozen=True)
class ScaledPromptConfig(MethodConfig):
    """A test-only method: prompt tuning with a trainable scale on the soft vectors."""

    method: ClassVar[str] = "scaled_prompt_test"
    embedding_only: ClassVar[bool] = True
    default_lr: ClassVar[float] = 5e-2


class ScaledPrompt(nn.Module):
    def __init__(self, config: ScaledPromptConfig, embeds: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.config = config
        self.embeds, self.scale = nn.Parameter(embeds.float()), nn.Parameter(scale.float())  # [n,H], [1]

    @classmethod
    def create(cls, config, base):
        return cls(config, init_embeddings(base, config, config.num_virtual_tokens), torch.ones(1, device=base.device))

    def parts(self, base):
        return PromptParts(embeds=self.embeds * self.scale)

    def export_tensors(self):
        return {"embeds": (self.embeds * self.scale).detach(), "scale": torch.ones_like(self.scale).detach()}

    @staticmethod
    def expected_shapes(config, facts):
        return {"embeds": (config.num_virtual_tokens, facts.hidden_size), "scale": (1,)}

    @classmethod
    def from_tensors(cls, config, tensors):
        return cls(config, tensors["embeds"], tensors["scale"])


def test_a_new_method_is_one_registration(base, tmp_path):
    registry.register(ScaledPromptConfig, ScaledPrompt)
    try:
        config = registry.build_config("scaled_prompt_test", Knobs(num_virtual_tokens=2))
        p = sp.attach(base, config)
        task = Task(Template.parse("{text}:{label}"), Verbalizer({"p": ["P"], "n": ["N"]}))
        ex = task.encode_all([{"text": t, "label": "pn"[i % 2]} for i, t in enumerate(["ab", "xyz", "q"] * 4)],
                             base.tokenizer)
        before = p.prompt.scale.detach().clone()
        train(p, task, ex, [], TrainConfig(steps=3, batch_size=4, warmup_steps=0), progress=False)
        assert not torch.equal(p.prompt.scale.detach(), before)
        loaded = sp.load_prompt(p.save(tmp_path / "new"), base)
        ids = torch.tensor([ex[0].ids])
        assert torch.allclose(loaded(ids), p(ids), atol=1e-5)
        assert registry.get("scaled_prompt_test").embedding_only
    finally:
        registry._METHODS.pop("scaled_prompt_test", None)


def test_no_code_outside_a_method_package_compares_against_a_method_name():
    """Callers ask the method (default_lr, embedding_only, task_template, from_knobs); they never test its name."""
    root = Path(sp.__file__).parent
    names = set(registry.names())
    found = []
    for path in root.rglob("*.py"):
        if path.is_relative_to(root / "methods"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                consts = [c for c in [node.left, *node.comparators] if isinstance(c, (ast.Constant, ast.Tuple))]
                values = {e.value for c in consts for e in (c.elts if isinstance(c, ast.Tuple) else [c])
                          if isinstance(e, ast.Constant)}
                if values & names:
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not found, f"method-name tests outside softprompt/methods: {found}"
