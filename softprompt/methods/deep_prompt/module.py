"""Deep prompt tuning. Li & Liang (2021) https://arxiv.org/abs/2101.00190 ; Liu et al., P-tuning v2 (2022)
https://arxiv.org/abs/2110.07602

Layer l's input is [P_l ; H_(l-1)] where H_(l-1) are the previous layer's hidden states of the user input
only; the outputs at the prefix positions are discarded and layer l+1 gets its own fresh P_(l+1).

Exact, cheaper realisation: the prefix positions reach the user positions only through the keys/values
layer l computes from P_l. Those depend on P_l alone (not on the input), so one pass of the frozen model
over the prefix with every layer's input overwritten by P_l yields them; the batch then attends to them as a
K/V prefix. tests/test_exactness.py checks this against the literal concatenate-and-drop reference.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from softprompt.errors import InputError
from softprompt.methods.deep_prompt.config import DeepPromptConfig
from softprompt.methods.init import init_embeddings, init_token_ids, vocab_sample
from softprompt.model.compat import cache_kw, cache_of
from softprompt.model.hooks import capture_layer_inputs, overwrite_layer_inputs
from softprompt.model.inject import PromptParts


@torch.no_grad()
def layer_states(base: Any, ids: list[int]) -> torch.Tensor:
    """[L,n,H]: the embedding output for layer 0, then the hidden states entering layers 1..L-1."""
    t = torch.tensor(ids, device=base.device)
    seen = capture_layer_inputs(base, t)
    return torch.stack([base.embed(t)] + seen[1:]).float()


def prefix_kv(base: Any, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer K/V [L,kvh,n,hd] that each layer computes from its own prefix vectors states[l] [n,H]."""
    n = states.shape[1]
    states = states.to(base.dtype)
    with overwrite_layer_inputs(base.layers, [None] + list(states[1:])):
        cache = cache_of(base.backbone(inputs_embeds=states[0][None], use_cache=True,
                                       **cache_kw(base.backbone, DynamicCache())))
    keys = torch.stack([layer.keys[0] for layer in cache.layers])
    values = torch.stack([layer.values[0] for layer in cache.layers])
    if keys.shape[2] != n:
        raise InputError(f"num_virtual_tokens={n} does not fit the model's sliding attention window; use fewer")
    return keys, values


def layer_scale(states: torch.Tensor) -> torch.Tensor:
    """[L,1,1]: each layer's median |x| over the median |x| of layer 0 (1 at the embeddings, where the
    learning rate is the one prompt tuning uses)."""
    med = states.detach().float().abs().flatten(1).median(dim=1).values.clamp_min(1e-12)
    return (med / med[0])[:, None, None]


class DeepPrompt(nn.Module):
    """The trainable tensor is `unit` = states / scale: with config.layer_scale, scale is `layer_scale` of the
    initial states; otherwise, and for a loaded prompt (whose states must come back bit for bit), it is 1."""

    def __init__(self, config: DeepPromptConfig, states: torch.Tensor, scaled: bool = True):
        super().__init__()
        self.config = config
        states = states.float()  # [L,n,H]
        if config.layer_scale and scaled:
            scale = layer_scale(states)
        else:
            scale = torch.ones(states.shape[0], 1, 1)
        self.register_buffer("scale", scale.to(states.device), persistent=False)  # a resume rebuilds it from the init
        self.unit = nn.Parameter(states / self.scale)

    @property
    def states(self) -> torch.Tensor:
        return self.unit * self.scale

    @classmethod
    def create(cls, config: DeepPromptConfig, base: Any) -> DeepPrompt:
        n = config.num_virtual_tokens
        if config.init == "random":
            ref = layer_states(base, vocab_sample(base, 64, config.seed))  # per-layer scale of real states
            g = torch.Generator().manual_seed(config.seed)
            noise = torch.randn(base.facts.num_layers, n, base.facts.hidden_size, generator=g).to(ref.device)
            states = noise * ref.std(dim=(1, 2), keepdim=True)
            states[0] = init_embeddings(base, config, n)
        else:
            states = layer_states(base, init_token_ids(base, config, n))
        return cls(config, states)

    def parts(self, base: Any) -> PromptParts:
        return PromptParts(kv=prefix_kv(base, self.states))

    def export_tensors(self) -> dict[str, torch.Tensor]:
        return {"states": self.states.detach()}

    @staticmethod
    def expected_shapes(config: DeepPromptConfig, facts: Any) -> dict[str, tuple[int, ...]]:
        return {"states": (facts.num_layers, config.num_virtual_tokens, facts.hidden_size)}

    @classmethod
    def from_tensors(cls, config: DeepPromptConfig, tensors: dict[str, torch.Tensor]) -> DeepPrompt:
        return cls(config, tensors["states"], scaled=False)
