"""Prompt tuning. Lester, Al-Rfou, Constant (2021), https://arxiv.org/abs/2104.08691

The soft prompt P [n,H] lives in the space of the embedding layer's output and is spliced before the
user's token embeddings: the model sees inputs_embeds = [P ; E(x)]. Nothing inside the model changes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from softprompt.methods.init import init_embeddings
from softprompt.methods.prompt_tuning.config import PromptTuningConfig
from softprompt.model.inject import PromptParts


class PromptTuning(nn.Module):
    def __init__(self, config: PromptTuningConfig, embeds: torch.Tensor):
        super().__init__()
        self.config = config
        self.embeds = nn.Parameter(embeds.float())  # [n,H]

    @classmethod
    def create(cls, config: PromptTuningConfig, base: Any) -> PromptTuning:
        return cls(config, init_embeddings(base, config, config.num_virtual_tokens))

    def parts(self, base: Any) -> PromptParts:
        return PromptParts(embeds=self.embeds)

    # --- artifacts ---
    def export_tensors(self) -> dict[str, torch.Tensor]:
        return {"embeds": self.embeds.detach()}

    @staticmethod
    def expected_shapes(config: PromptTuningConfig, facts: Any) -> dict[str, tuple[int, ...]]:
        return {"embeds": (config.num_virtual_tokens, facts.hidden_size)}

    @classmethod
    def from_tensors(cls, config: PromptTuningConfig, tensors: dict[str, torch.Tensor]) -> PromptTuning:
        return cls(config, tensors["embeds"])
