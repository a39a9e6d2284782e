"""Bottleneck adapters. Houlsby et al. (2019) https://arxiv.org/abs/1902.00751

After the attention and the FFN of every layer: h <- h + up(gelu(down(h))). `up` starts at zero, so the
model starts unchanged. Unlike soft prompts this changes the model's internal code path (forward hooks),
so it cannot be served under an embedding-only constraint.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from softprompt.methods.adapter.config import AdapterConfig
from softprompt.model.inject import PromptParts


class Adapter(nn.Module):
    def __init__(self, config: AdapterConfig, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self.config = config
        self.down_w = nn.Parameter(tensors["down_w"].float())  # [L,S,H,r]
        self.down_b = nn.Parameter(tensors["down_b"].float())  # [L,S,r]
        self.up_w = nn.Parameter(tensors["up_w"].float())  # [L,S,r,H]
        self.up_b = nn.Parameter(tensors["up_b"].float())  # [L,S,H]

    @classmethod
    def create(cls, config: AdapterConfig, base: Any) -> Adapter:
        shapes = cls.expected_shapes(config, base.facts)
        g = torch.Generator().manual_seed(config.seed)
        H = base.facts.hidden_size
        t = {k: torch.zeros(s) for k, s in shapes.items()}
        t["down_w"] = torch.randn(shapes["down_w"], generator=g) / H**0.5
        return cls(config, {k: v.to(base.device) for k, v in t.items()})

    def delta(self, layer: int, site: str, h: torch.Tensor) -> torch.Tensor:
        if site not in self.config.sites:
            return torch.zeros_like(h)
        s = self.config.sites.index(site)
        z = torch.nn.functional.gelu(h @ self.down_w[layer, s].to(h.dtype) + self.down_b[layer, s].to(h.dtype))
        return z @ self.up_w[layer, s].to(h.dtype) + self.up_b[layer, s].to(h.dtype)

    def parts(self, base: Any) -> PromptParts:
        return PromptParts(adapter=self)

    def export_tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k).detach() for k in ("down_w", "down_b", "up_w", "up_b")}

    @staticmethod
    def expected_shapes(config: AdapterConfig, facts: Any) -> dict[str, tuple[int, ...]]:
        L, S, H, r = facts.num_layers, len(config.sites), facts.hidden_size, config.bottleneck
        return {"down_w": (L, S, H, r), "down_b": (L, S, r), "up_w": (L, S, r, H), "up_b": (L, S, H)}

    @classmethod
    def from_tensors(cls, config: AdapterConfig, tensors: dict[str, torch.Tensor]) -> Adapter:
        return cls(config, tensors)
