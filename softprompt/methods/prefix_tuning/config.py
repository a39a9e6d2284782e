from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from softprompt.config import MethodConfig


@dataclass(frozen=True)
class PrefixTuningConfig(MethodConfig):
    """Prefix tuning, key/value form: trainable per-layer key and value prefixes."""

    method: ClassVar[str] = "prefix_tuning"
    embedding_only: ClassVar[bool] = False

    reparameterize: bool = False
    """Train the K/V through an MLP over n embeddings (Li & Liang); folded into plain K/V when saved."""

    reparam_hidden: int = 512
    """Hidden width of the reparameterisation MLP."""

    def problems(self) -> list[str]:
        out = super().problems()
        if self.reparam_hidden < 1:
            out.append(f"reparam_hidden={self.reparam_hidden}: must be >= 1")
        return out
