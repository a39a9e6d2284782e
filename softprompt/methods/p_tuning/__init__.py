from softprompt.methods.p_tuning.config import PTuningConfig
from softprompt.methods.p_tuning.module import PTuning
from softprompt.registry import register

register(PTuningConfig, PTuning)

__all__ = ["PTuningConfig", "PTuning"]
