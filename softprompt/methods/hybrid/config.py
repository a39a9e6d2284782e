from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from softprompt.config import ConfigBase
from softprompt.errors import ConfigError


@dataclass(frozen=True)
class HybridConfig(ConfigBase):
    """Hybrid hard + soft template: soft-token slots anywhere in a text template (PTR / OpenPrompt style)."""

    method: ClassVar[str] = "hybrid"

    template: str = "{soft:10} {text} {soft:4} {label}"
    """Template with {field} inputs, {soft:N}, {soft:N|init text}, {soft:N:name} slots and a final {label}."""

    answer_field: str = "label"
    """Name of the answer slot in the template."""

    seed: int = 0
    """Seed for soft slots initialised from vocabulary samples."""

    def problems(self) -> list[str]:
        from softprompt.templates import Template

        try:
            t = Template.parse(self.template, answer_field=self.answer_field)
        except ConfigError as e:
            return [f"template: {p}" for p in e.problems]
        if t.num_soft == 0:
            return [f"template={self.template!r} has no soft slot: use a {{soft:N}} slot, or another method"]
        return []

    @property
    def num_virtual_tokens(self) -> int:
        from softprompt.templates import Template

        return Template.parse(self.template, answer_field=self.answer_field).num_soft
