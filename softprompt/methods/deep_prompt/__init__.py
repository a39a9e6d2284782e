from softprompt.methods.deep_prompt.config import DeepPromptConfig
from softprompt.methods.deep_prompt.module import DeepPrompt
from softprompt.registry import register

register(DeepPromptConfig, DeepPrompt)

__all__ = ["DeepPromptConfig", "DeepPrompt"]
