"""Prefix tuning, key/value form. Li & Liang (2021) https://arxiv.org/abs/2101.00190 ;
P-tuning v2, Liu et al. (2022) https://arxiv.org/abs/2110.07602

Each layer attends to n trainable (key, value) pairs before the user input. Optionally the K/V are
produced while training by an MLP over n embeddings (reparameterisation); saving folds the MLP away so
artifacts and serving only see plain K/V. init='text' starts from the K/V of the frozen model's own
prefill of a text (as Cartridges do); 'vocab' from the prefill of sampled tokens.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from softprompt.methods.init import init_embeddings, init_token_ids, vocab_sample
from softprompt.methods.prefix_tuning.config import PrefixTuningConfig
from softprompt.model.compat import cache_kw, cache_of
from softprompt.model.inject import PromptParts


@torch.no_grad()
def prefill_kv(base: Any, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """K/V [L,kvh,n,hd] of the frozen model's prefill of `ids`."""
    t = torch.tensor([ids], device=base.device)
    cache = cache_of(base.backbone(input_ids=t, use_cache=True, **cache_kw(base.backbone, DynamicCache())))
    keys = torch.stack([layer.keys[0] for layer in cache.layers]).float()
    values = torch.stack([layer.values[0] for layer in cache.layers]).float()
    return keys, values


class PrefixTuning(nn.Module):
    def __init__(self, config: PrefixTuningConfig, keys: torch.Tensor | None = None,
                 values: torch.Tensor | None = None, reparam: tuple[torch.Tensor, int, tuple] | None = None):
        super().__init__()
        self.config = config
        if reparam is None:
            self.keys = nn.Parameter(keys.float())  # [L,kvh,n,hd]
            self.values = nn.Parameter(values.float())
            self.mlp = None
        else:
            emb, hidden, self.kv_shape = reparam  # kv_shape = (L,kvh,hd)
            L, kvh, hd = self.kv_shape
            self.emb = nn.Parameter(emb.float())  # [n,H]
            self.mlp = nn.Sequential(nn.Linear(emb.shape[1], hidden), nn.Tanh(), nn.Linear(hidden, 2 * L * kvh * hd))

    @classmethod
    def create(cls, config: PrefixTuningConfig, base: Any) -> PrefixTuning:
        n, f = config.num_virtual_tokens, base.facts
        if config.reparameterize:
            with torch.random.fork_rng(devices=[]):  # seeds the MLP's init without touching the caller's RNG
                torch.manual_seed(config.seed)
                return cls(config, reparam=(init_embeddings(base, config, n), config.reparam_hidden,
                                            (f.num_layers, f.kv_heads, f.head_dim)))
        if config.init == "random":
            k, v = prefill_kv(base, vocab_sample(base, 16, config.seed))  # stays inside any sliding window
            g = torch.Generator().manual_seed(config.seed)
            shape = (f.num_layers, f.kv_heads, n, f.head_dim)
            keys = torch.randn(shape, generator=g).to(k.device) * k.std(dim=(1, 2, 3), keepdim=True)
            values = torch.randn(shape, generator=g).to(v.device) * v.std(dim=(1, 2, 3), keepdim=True)
            return cls(config, keys, values)
        return cls(config, *prefill_kv(base, init_token_ids(base, config, n)))

    def kv(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mlp is None:
            return self.keys, self.values
        L, kvh, hd = self.kv_shape
        n = self.emb.shape[0]
        out = self.mlp(self.emb).view(n, 2, L, kvh, hd).permute(1, 2, 3, 0, 4)  # [2,L,kvh,n,hd]
        return out[0], out[1]

    def parts(self, base: Any) -> PromptParts:
        return PromptParts(kv=self.kv())

    def export_tensors(self) -> dict[str, torch.Tensor]:
        keys, values = self.kv()  # the MLP is folded away
        return {"keys": keys.detach().contiguous(), "values": values.detach().contiguous()}

    @staticmethod
    def expected_shapes(config: PrefixTuningConfig, facts: Any) -> dict[str, tuple[int, ...]]:
        shape = (facts.num_layers, facts.kv_heads, config.num_virtual_tokens, facts.head_dim)
        return {"keys": shape, "values": shape}

    @classmethod
    def from_tensors(cls, config: PrefixTuningConfig, tensors: dict[str, torch.Tensor]) -> PrefixTuning:
        return cls(config, tensors["keys"], tensors["values"])
