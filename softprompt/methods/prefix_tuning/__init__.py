from softprompt.methods.prefix_tuning.config import PrefixTuningConfig
from softprompt.methods.prefix_tuning.module import PrefixTuning
from softprompt.registry import register

register(PrefixTuningConfig, PrefixTuning)

__all__ = ["PrefixTuningConfig", "PrefixTuning"]
