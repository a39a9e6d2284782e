"""Frozen by default: training a prompt of any method moves the prompt and nothing of the base model."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

import softprompt as sp
from softprompt.training.loop import Micro, optimizer_step
from tests.test_exactness import CONFIGS, METHODS, row_ids
from tests.tiny import ARCHS, tiny_base

SEQUENCE = [7, 22, 41, 13, 58, 30, 9, 77, 64, 18]
STEPS = 6


def next_token_loss(p: sp.Prompted, ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting each real next token. ids [1,L] (may hold soft-slot placeholders)."""
    logits = p(ids)[:, :-1]  # [1,L-1,V]
    target = ids[:, 1:]
    keep = target >= 0  # placeholders are not predicted
    return torch.nn.functional.cross_entropy(logits[keep], target[keep])


def tensors_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(itertools.chain(model.named_parameters(), model.named_buffers()))


# every method, each on one architecture; the methods cycle through the architectures so each arch is covered
CASES = [(name, ARCHS[i % len(ARCHS)]) for i, name in enumerate(METHODS)]


@pytest.mark.parametrize("name, arch", CASES, ids=[f"{n}-{a}" for n, a in CASES])
def test_training_moves_only_the_prompt(name, arch):
    base = tiny_base(arch)
    before = copy.deepcopy(base.model)
    p = sp.attach(base, CONFIGS[name])
    ids = torch.tensor([row_ids(p, SEQUENCE)])

    base_params = {id(t) for t in base.model.parameters()}
    assert not any(t.requires_grad for t in base.model.parameters()), "load_base must freeze every weight"
    opt = torch.optim.AdamW(p.parameters(), lr=0.05)
    trained = [q for g in opt.param_groups for q in g["params"]]
    assert trained and all(q.requires_grad for q in trained)
    assert {id(q) for q in trained} == {id(q) for q in p.parameters()}
    assert base_params.isdisjoint(id(q) for q in trained), "the optimizer must not hold base weights"

    p.train()
    assert not base.model.training, "training the prompt must leave the base in eval mode (no dropout)"
    with torch.no_grad():
        start = float(next_token_loss(p, ids))
    for step in range(STEPS):  # softprompt's one optimizer step (it refuses a non-finite loss)
        optimizer_step(opt, trained, [Micro(lambda: (next_token_loss(p, ids), {}), 1)], lr=0.05, clip_norm=0.0,
                       step=step)
    with torch.no_grad():
        end = float(next_token_loss(p, ids))
    assert end < start - 1e-3, f"loss did not decrease: {start:.4f} -> {end:.4f}"

    assert all(t.grad is None for t in base.model.parameters()), "no gradient may reach the base model"
    now, then = tensors_of(base.model), tensors_of(before)
    assert now.keys() == then.keys()
    changed = [k for k in now if not torch.equal(now[k], then[k])]
    assert not changed, f"base tensors changed by training: {changed}"


@pytest.mark.parametrize("name", METHODS)
def test_attach_leaves_the_callers_random_state_alone(name):
    base = tiny_base("llama")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    sp.attach(base, CONFIGS[name])
    assert torch.equal(torch.rand(3), expected)
