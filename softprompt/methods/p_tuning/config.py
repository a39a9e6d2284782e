from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from softprompt.config import MethodConfig


@dataclass(frozen=True)
class PTuningConfig(MethodConfig):
    """P-tuning: the input soft prompt is produced by a small prompt encoder (LSTM or MLP)."""

    method: ClassVar[str] = "p_tuning"

    encoder: Literal["lstm", "mlp"] = "mlp"
    """Prompt encoder: 'lstm' (bidirectional, as in the paper) or 'mlp'."""

    encoder_hidden: int = 256
    """Hidden width of the prompt encoder."""

    def problems(self) -> list[str]:
        out = super().problems()
        if self.encoder not in ("lstm", "mlp"):
            out.append(f"encoder={self.encoder!r}: must be 'lstm' or 'mlp'")
        if self.encoder_hidden < 2:
            out.append(f"encoder_hidden={self.encoder_hidden}: must be >= 2")
        return out
