from softprompt.methods.prompt_tuning.config import PromptTuningConfig
from softprompt.methods.prompt_tuning.module import PromptTuning
from softprompt.registry import register

register("prompt_tuning", PromptTuningConfig, PromptTuning, embedding_only=True)

__all__ = ["PromptTuningConfig", "PromptTuning"]
