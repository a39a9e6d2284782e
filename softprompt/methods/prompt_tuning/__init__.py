from softprompt.methods.prompt_tuning.config import PromptTuningConfig
from softprompt.methods.prompt_tuning.module import PromptTuning
from softprompt.registry import register

register(PromptTuningConfig, PromptTuning)

__all__ = ["PromptTuningConfig", "PromptTuning"]
