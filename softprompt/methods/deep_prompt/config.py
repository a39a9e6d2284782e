from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from softprompt.config import MethodConfig


@dataclass(frozen=True)
class DeepPromptConfig(MethodConfig):
    """Deep prompt tuning: fresh trainable vectors P_l prepended to the input of every layer l."""

    method: ClassVar[str] = "deep_prompt"
    embedding_only: ClassVar[bool] = False
