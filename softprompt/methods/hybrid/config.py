from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from softprompt.config import ConfigBase, Knobs
from softprompt.errors import ConfigError, InputError


@dataclass(frozen=True)
class HybridConfig(ConfigBase):
    """Hybrid hard + soft template: soft-token slots anywhere in a text template (PTR / OpenPrompt style)."""

    method: ClassVar[str] = "hybrid"
    embedding_only: ClassVar[bool] = True

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

    def task_template(self) -> str:
        """A hybrid prompt's soft slots live in its template: it trains and runs on a task with that template."""
        return self.template

    @classmethod
    def from_knobs(cls, knobs: Knobs) -> HybridConfig:
        """The template is the user's (`knobs.template`), else the data set's suggestion (`knobs.soft_template`)."""
        template = knobs.template or knobs.soft_template
        if not template:
            raise InputError("the hybrid method needs a template with {soft:N} slots (train --template, compare "
                             "--hybrid-template), e.g. '{soft:8} Review: {text} {soft:2} Sentiment: {label}'")
        return cls(template=template, **({"seed": knobs.seed} if knobs.seed is not None else {}))

    @property
    def num_virtual_tokens(self) -> int:
        from softprompt.templates import Template

        return Template.parse(self.template, answer_field=self.answer_field).num_soft
