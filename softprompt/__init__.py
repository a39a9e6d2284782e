"""softprompt: soft-prompt PEFT of frozen LLMs (prompt tuning, prefix / deep prompt tuning, P-tuning, adapters).

    import softprompt as sp
    base = sp.load_base("smollm2")
    pt = sp.attach(base, sp.PromptTuningConfig(num_virtual_tokens=20, init="text", init_text="..."))

The public names load on first use (PEP 562), so `import softprompt` and `softprompt --help` do not import
torch or transformers; `sp.load_base` and the rest work as plain attributes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "ArtifactError": "softprompt.errors",
    "ConfigError": "softprompt.errors",
    "IncompatibleBaseError": "softprompt.errors",
    "InputError": "softprompt.errors",
    "SoftPromptError": "softprompt.errors",
    "TrainingError": "softprompt.errors",
    "AdapterConfig": "softprompt.methods.adapter",
    "DeepPromptConfig": "softprompt.methods.deep_prompt",
    "HybridConfig": "softprompt.methods.hybrid",
    "PTuningConfig": "softprompt.methods.p_tuning",
    "PrefixTuningConfig": "softprompt.methods.prefix_tuning",
    "PromptTuningConfig": "softprompt.methods.prompt_tuning",
    "Base": "softprompt.model.base",
    "load_base": "softprompt.model.base",
    "generate_ids": "softprompt.model.generate",
    "PromptParts": "softprompt.model.inject",
    "forward_mixed": "softprompt.model.inject",
    "hidden_mixed": "softprompt.model.inject",
    "pad_batch": "softprompt.model.inject",
    "Prompted": "softprompt.prompted",
    "attach": "softprompt.prompted",
    "generate_mixed": "softprompt.prompted",
    "load_prompt": "softprompt.prompted",
    "load_prompt_bytes": "softprompt.prompted",
}

__all__ = [  # the keys of _EXPORTS, written out for type checkers and linters
    "AdapterConfig", "ArtifactError", "Base", "ConfigError", "DeepPromptConfig", "HybridConfig",
    "IncompatibleBaseError", "InputError", "PTuningConfig", "PrefixTuningConfig", "Prompted", "PromptParts",
    "PromptTuningConfig", "SoftPromptError", "TrainingError", "attach", "forward_mixed", "generate_ids",
    "generate_mixed", "hidden_mixed", "load_base", "load_prompt", "load_prompt_bytes", "pad_batch",
]

if TYPE_CHECKING:  # type checkers and IDEs see the real names
    from softprompt.errors import (
        ArtifactError,
        ConfigError,
        IncompatibleBaseError,
        InputError,
        SoftPromptError,
        TrainingError,
    )
    from softprompt.methods.adapter import AdapterConfig
    from softprompt.methods.deep_prompt import DeepPromptConfig
    from softprompt.methods.hybrid import HybridConfig
    from softprompt.methods.p_tuning import PTuningConfig
    from softprompt.methods.prefix_tuning import PrefixTuningConfig
    from softprompt.methods.prompt_tuning import PromptTuningConfig
    from softprompt.model.base import Base, load_base
    from softprompt.model.generate import generate_ids
    from softprompt.model.inject import PromptParts, forward_mixed, hidden_mixed, pad_batch
    from softprompt.prompted import Prompted, attach, generate_mixed, load_prompt, load_prompt_bytes


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and cache the name in this module."""
    module = _EXPORTS.get(name)
    if module is None:
        if name.startswith("__"):
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        try:  # a subpackage (sp.registry, sp.training ...) reached as an attribute
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
