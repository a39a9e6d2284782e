from softprompt.methods.hybrid.config import HybridConfig
from softprompt.methods.hybrid.module import Hybrid
from softprompt.registry import register

register("hybrid", HybridConfig, Hybrid, embedding_only=True)

__all__ = ["HybridConfig", "Hybrid"]
