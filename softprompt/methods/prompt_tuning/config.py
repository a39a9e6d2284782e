from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from softprompt.config import MethodConfig


@dataclass(frozen=True)
class PromptTuningConfig(MethodConfig):
    """Prompt tuning (Lester et al., 2021): n trainable vectors at the input-embedding layer only."""

    method: ClassVar[str] = "prompt_tuning"
    embedding_only: ClassVar[bool] = True
