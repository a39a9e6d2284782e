"""Per-method recipe facts: deep prompt's per-layer scale (what one optimizer step does to each layer)."""

from __future__ import annotations

import torch

import softprompt as sp
from softprompt.methods.deep_prompt.module import DeepPrompt
from tests.tiny import tiny_base


def _one_adam_step(layer_scale: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Layers whose states are 1x, 10x and 100x apart; the per-layer mean |change| of one AdamW step."""
    g = torch.Generator().manual_seed(0)
    states = torch.randn(3, 4, 8, generator=g) * torch.tensor([1.0, 10.0, 100.0])[:, None, None]
    m = DeepPrompt(sp.DeepPromptConfig(num_virtual_tokens=4, layer_scale=layer_scale), states)
    before = m.states.detach().clone()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.0)
    (m.states * torch.randn(3, 4, 8, generator=g)).sum().backward()
    opt.step()
    delta = (m.states.detach() - before).abs().flatten(1).mean(dim=1)
    return delta, before.abs().flatten(1).median(dim=1).values


def test_layer_scale_moves_every_layer_by_the_same_relative_amount():
    delta, size = _one_adam_step(layer_scale=True)
    relative = delta / size
    assert torch.allclose(relative, relative[0].expand(3), rtol=0.05), relative
    plain, _ = _one_adam_step(layer_scale=False)  # without it: the same absolute step at every layer
    assert torch.allclose(plain, plain[0].expand(3), rtol=0.05), plain
    assert delta[2] > 50 * plain[2]


def test_a_saved_layer_scaled_prompt_loads_back_bit_for_bit(tmp_path):
    base = tiny_base()
    p = sp.attach(base, sp.DeepPromptConfig(num_virtual_tokens=3, init="random", layer_scale=True))
    with torch.no_grad():
        p.prompt.unit.add_(0.37)  # not a multiple of the scale's rounding
    q = sp.load_prompt(p.save(tmp_path / "deep"), base)
    assert torch.equal(q.prompt.states, p.prompt.states)
    assert q.config.layer_scale
