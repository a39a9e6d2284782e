from softprompt.methods.adapter.config import AdapterConfig
from softprompt.methods.adapter.module import Adapter
from softprompt.registry import register

register(AdapterConfig, Adapter)

__all__ = ["AdapterConfig", "Adapter"]
