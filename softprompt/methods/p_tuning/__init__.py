from softprompt.methods.p_tuning.config import PTuningConfig
from softprompt.methods.p_tuning.module import PTuning
from softprompt.registry import register

register("p_tuning", PTuningConfig, PTuning, embedding_only=True)

__all__ = ["PTuningConfig", "PTuning"]
