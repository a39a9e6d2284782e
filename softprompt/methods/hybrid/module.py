"""Hybrid hard + soft templates. Soft tokens anywhere in a text template, e.g.
"{soft:10} Review: {text} {soft:4|in one word:} Sentiment: {label}".
Related: PTR (Han et al., 2021) https://arxiv.org/abs/2105.11259 ; OpenPrompt (Ding et al., 2022)
https://arxiv.org/abs/2111.01998 (whose template parser evaluates strings as code; we deliberately do not copy it).

The template renders to token ids where each soft vector is a placeholder id -(k+1); the injection layer
substitutes slots[k]. Only the input embeddings change, so hybrid prompts serve on an unmodified model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from softprompt.methods.hybrid.config import HybridConfig
from softprompt.methods.init import vocab_sample
from softprompt.model.inject import PromptParts


class Hybrid(nn.Module):
    def __init__(self, config: HybridConfig, slots: torch.Tensor):
        super().__init__()
        self.config = config
        self.slots = nn.Parameter(slots.float())  # [K,H]

    @classmethod
    @torch.no_grad()
    def create(cls, config: HybridConfig, base: Any) -> Hybrid:
        from softprompt.templates import Template

        t = Template.parse(config.template, answer_field=config.answer_field)
        ids = vocab_sample(base, t.num_soft, config.seed)
        for offset, length, text in t.soft_init_texts():
            tok = base.tokenizer(text, add_special_tokens=False)["input_ids"] or ids[:1]
            ids[offset:offset + length] = (tok * (length // len(tok) + 1))[:length]
        return cls(config, base.embed(torch.tensor(ids, device=base.device)).float())

    def parts(self, base: Any) -> PromptParts:
        return PromptParts(slots=self.slots)

    def export_tensors(self) -> dict[str, torch.Tensor]:
        return {"slots": self.slots.detach()}

    @staticmethod
    def expected_shapes(config: HybridConfig, facts: Any) -> dict[str, tuple[int, ...]]:
        return {"slots": (config.num_virtual_tokens, facts.hidden_size)}

    @classmethod
    def from_tensors(cls, config: HybridConfig, tensors: dict[str, torch.Tensor]) -> Hybrid:
        return cls(config, tensors["slots"])
