from softprompt.methods.adapter.config import AdapterConfig
from softprompt.methods.adapter.module import Adapter
from softprompt.registry import register

register("adapter", AdapterConfig, Adapter, embedding_only=False)

__all__ = ["AdapterConfig", "Adapter"]
