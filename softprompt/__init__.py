"""softprompt: soft-prompt PEFT of frozen LLMs (prompt tuning, prefix / deep prompt tuning, P-tuning, adapters).

    import softprompt as sp
    base = sp.load_base("smollm2")
    pt = sp.attach(base, sp.PromptTuningConfig(num_virtual_tokens=20, init="text", init_text="..."))
    pt = sp.attach(base, sp.build_config("prefix_tuning", sp.Knobs(num_virtual_tokens=10)))  # a method by name
"""

__version__ = "0.1.0"

from softprompt.config import Knobs  # noqa: E402
from softprompt.errors import (  # noqa: E402
    ArtifactError,
    ConfigError,
    IncompatibleBaseError,
    InputError,
    SoftPromptError,
    TrainingError,
)
from softprompt.methods.adapter import AdapterConfig  # noqa: E402
from softprompt.methods.deep_prompt import DeepPromptConfig  # noqa: E402
from softprompt.methods.hybrid import HybridConfig  # noqa: E402
from softprompt.methods.p_tuning import PTuningConfig  # noqa: E402
from softprompt.methods.prefix_tuning import PrefixTuningConfig  # noqa: E402
from softprompt.methods.prompt_tuning import PromptTuningConfig  # noqa: E402
from softprompt.model.base import Base, load_base  # noqa: E402
from softprompt.model.generate import generate_ids  # noqa: E402
from softprompt.model.inject import PromptParts, forward_mixed, hidden_mixed, pad_batch  # noqa: E402
from softprompt.prompted import (  # noqa: E402
    Prompted,
    TrainerModel,
    attach,
    generate_mixed,
    load_prompt,
    load_prompt_bytes,
)
from softprompt.registry import build_config  # noqa: E402

__all__ = [
    "AdapterConfig", "ArtifactError", "Base", "ConfigError", "DeepPromptConfig", "IncompatibleBaseError",
    "HybridConfig", "InputError", "Knobs", "PTuningConfig", "PrefixTuningConfig", "Prompted", "PromptParts",
    "PromptTuningConfig", "TrainerModel",
    "SoftPromptError", "TrainingError", "attach", "build_config", "forward_mixed", "generate_ids", "generate_mixed",
    "hidden_mixed", "load_base", "load_prompt", "load_prompt_bytes", "pad_batch",
]
