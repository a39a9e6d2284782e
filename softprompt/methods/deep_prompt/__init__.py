from softprompt.methods.deep_prompt.config import DeepPromptConfig
from softprompt.methods.deep_prompt.module import DeepPrompt
from softprompt.registry import register

register("deep_prompt", DeepPromptConfig, DeepPrompt, embedding_only=False)

__all__ = ["DeepPromptConfig", "DeepPrompt"]
