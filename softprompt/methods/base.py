"""The method contract: what every method's config and module implement, and nothing else callers may assume.

A method is one package `softprompt/methods/<name>/` holding

    config.py    a frozen dataclass (a `softprompt.config.ConfigBase`) following `MethodConfigProtocol`
    module.py    an `nn.Module` following `SoftPromptMethod`
    __init__.py  `register(Config, Module)`

plus one import line in `softprompt/methods/__init__.py`. Nothing else changes: training asks the config for its
learning rate and template, serving asks it whether it is embedding-only, the CLI and report build it with
`registry.build_config(name, Knobs(...))`, and the injection layer reads only the `PromptParts` the module returns
(see model/inject.py). No code outside a method's package tests a method's name.

tests/test_methods.py checks every registered method against these protocols.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from softprompt.config import Knobs
from softprompt.model.inject import PromptParts


@runtime_checkable
class MethodConfigProtocol(Protocol):
    """A method's config: only what the user chose, validated at construction, plus the method's facts."""

    method: ClassVar[str]
    """Registry name, also written to the artifact manifest."""
    default_lr: ClassVar[float]
    """Peak learning rate the recipe uses when TrainConfig.lr is None."""
    embedding_only: ClassVar[bool]
    """True when the method changes only the input embeddings (servable on an unmodified model, exportable to
    vLLM's prompt-embeds input)."""

    @property
    def num_virtual_tokens(self) -> int:
        """Positions the prompt adds per request (0 for adapters)."""
        ...

    def task_template(self) -> str | None:
        """The task template this config implies (hybrid: its own template, whose soft slots it fills); None: the
        prompt works with any template."""
        ...

    @classmethod
    def from_knobs(cls, knobs: Knobs) -> Any:
        """The config from the knobs every method understands (num_virtual_tokens, init, init_text, init_labels,
        seed, template, soft_template); knobs that do not apply are ignored, missing ones take the defaults."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-able fields plus "method" (the manifest's config)."""
        ...

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        """Inverse of `to_dict`; unknown fields are refused."""
        ...


@runtime_checkable
class SoftPromptMethod(Protocol):
    """A method's module. Its parameters are exactly what training optimises; the base model is never one of them."""

    config: Any
    """The method's config (a `MethodConfigProtocol`)."""

    @classmethod
    def create(cls, config: Any, base: Any) -> SoftPromptMethod:
        """A fresh, initialised prompt for `base` (reads sizes from `base.facts`, never from the config)."""
        ...

    def parts(self, base: Any) -> PromptParts:
        """What the prompt adds to a forward pass: input-embedding vectors, per-layer K/V, template slots and/or
        adapter deltas. The only thing the injection layer sees."""
        ...

    def export_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors an artifact stores (reparameterisations folded away)."""
        ...

    @staticmethod
    def expected_shapes(config: Any, facts: Any) -> dict[str, tuple[int, ...]]:
        """Shape of every exported tensor for a base with these facts; loading refuses anything else."""
        ...

    @classmethod
    def from_tensors(cls, config: Any, tensors: dict[str, torch.Tensor]) -> SoftPromptMethod:
        """Inverse of `export_tensors`."""
        ...


__all__ = ["Knobs", "MethodConfigProtocol", "SoftPromptMethod"]
