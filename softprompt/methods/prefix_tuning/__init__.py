from softprompt.methods.prefix_tuning.config import PrefixTuningConfig
from softprompt.methods.prefix_tuning.module import PrefixTuning
from softprompt.registry import register

register("prefix_tuning", PrefixTuningConfig, PrefixTuning, embedding_only=False)

__all__ = ["PrefixTuningConfig", "PrefixTuning"]
