"""P-tuning. Liu et al., "GPT Understands, Too" (2021) https://arxiv.org/abs/2103.10385

The soft prompt is the output of a prompt encoder over n trainable input vectors:
    P = X + head(encoder(X))      X [n,H] initialised like prompt tuning; head's last layer starts at zero,
so training starts from the initialisation and the encoder couples the tokens. Saved as plain embeddings
(the encoder is only a training-time reparameterisation); a loaded artifact holds P directly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from softprompt.methods.init import init_embeddings
from softprompt.methods.p_tuning.config import PTuningConfig
from softprompt.model.inject import PromptParts


class PTuning(nn.Module):
    def __init__(self, config: PTuningConfig, inputs: torch.Tensor, with_encoder: bool = True):
        super().__init__()
        self.config = config
        self.inputs = nn.Parameter(inputs.float())  # [n,H]
        H, h = inputs.shape[1], config.encoder_hidden
        self.lstm = None
        self.head = None
        if with_encoder:
            if config.encoder == "lstm":
                self.lstm = nn.LSTM(H, h // 2, num_layers=2, bidirectional=True, batch_first=True)
                self.head = nn.Sequential(nn.Linear(2 * (h // 2), h), nn.ReLU(), nn.Linear(h, H))
            else:
                self.head = nn.Sequential(nn.Linear(H, h), nn.ReLU(), nn.Linear(h, H))
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

    @classmethod
    def create(cls, config: PTuningConfig, base: Any) -> PTuning:
        with torch.random.fork_rng(devices=[]):  # seeds the encoder's init without touching the caller's RNG
            torch.manual_seed(config.seed)
            return cls(config, init_embeddings(base, config, config.num_virtual_tokens)).to(base.device)

    def embeds(self) -> torch.Tensor:
        if self.head is None:
            return self.inputs
        x = self.inputs
        if self.lstm is not None:
            x = self.lstm(x[None])[0][0]  # [n,h]
        return self.inputs + self.head(x)

    def parts(self, base: Any) -> PromptParts:
        return PromptParts(embeds=self.embeds())

    def export_tensors(self) -> dict[str, torch.Tensor]:
        return {"embeds": self.embeds().detach().contiguous()}

    @staticmethod
    def expected_shapes(config: PTuningConfig, facts: Any) -> dict[str, tuple[int, ...]]:
        return {"embeds": (config.num_virtual_tokens, facts.hidden_size)}

    @classmethod
    def from_tensors(cls, config: PTuningConfig, tensors: dict[str, torch.Tensor]) -> PTuning:
        return cls(config, tensors["embeds"], with_encoder=False)
