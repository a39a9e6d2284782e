from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

from softprompt.config import ConfigBase

Site = Literal["attn", "mlp"]  # the sites model/hooks.py hooks (its SITES; tests/cli checks they agree)
SITES: tuple[str, ...] = get_args(Site)


@dataclass(frozen=True)
class AdapterConfig(ConfigBase):
    """Bottleneck adapters after attention and/or FFN in every layer (changes the model's code path)."""

    method: ClassVar[str] = "adapter"

    bottleneck: int = 16
    """Width of the down-projection."""

    sites: tuple[Site, ...] = SITES
    """Where adapters sit in each layer: 'attn', 'mlp' or both."""

    seed: int = 0
    """Seed for the down-projection initialisation."""

    num_virtual_tokens = 0  # adapters add no tokens

    def __post_init__(self) -> None:
        if not isinstance(self.sites, tuple):
            object.__setattr__(self, "sites", tuple(self.sites))
        super().__post_init__()

    def problems(self) -> list[str]:
        out = []
        if not isinstance(self.bottleneck, int) or self.bottleneck < 1:
            out.append(f"bottleneck={self.bottleneck!r}: must be an integer >= 1")
        bad = [s for s in self.sites if s not in SITES]
        if bad or not self.sites:
            out.append(f"sites={self.sites!r}: choose one or more of {SITES}")
        return out
