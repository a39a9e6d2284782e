from softprompt.methods.hybrid.config import HybridConfig
from softprompt.methods.hybrid.module import Hybrid
from softprompt.registry import register

register(HybridConfig, Hybrid)

__all__ = ["HybridConfig", "Hybrid"]
