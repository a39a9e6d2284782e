"""One package per method; importing this package registers them all."""

from softprompt.methods import adapter, deep_prompt, hybrid, p_tuning, prefix_tuning, prompt_tuning  # noqa: F401
