"""Method registry: name -> (Config class, Module class). Methods register themselves on import.

Adding a method is one package under softprompt/methods/ (config.py, module.py, and an __init__.py that calls
`register(Config, Module)`) plus one import line in softprompt/methods/__init__.py. The contract both classes
implement is written down in softprompt/methods/base.py and docs/methods.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from softprompt.config import Knobs
from softprompt.errors import ConfigError


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config_cls: type
    module_cls: type

    @property
    def embedding_only(self) -> bool:
        """True when the method changes only input embeddings (servable on an unmodified model)."""
        return bool(self.config_cls.embedding_only)


_METHODS: dict[str, MethodSpec] = {}


def register(config_cls: type, module_cls: type) -> None:
    """Register a method under its config's `method` name (both classes follow softprompt.methods.base)."""
    name = config_cls.method
    if not name:
        raise RuntimeError(f"{config_cls.__name__} has no `method` name")
    if name in _METHODS and _METHODS[name].module_cls is not module_cls:
        raise RuntimeError(f"method {name!r} registered twice")
    _METHODS[name] = MethodSpec(name, config_cls, module_cls)


def _load_all() -> None:
    import softprompt.methods  # noqa: F401  (registers every method package)


def get(name: str) -> MethodSpec:
    _load_all()
    if name not in _METHODS:
        raise ConfigError([f"method={name!r}: unknown; known methods: {', '.join(sorted(_METHODS))}"], "method")
    return _METHODS[name]


def for_config(config: Any) -> MethodSpec:
    return get(type(config).method)


def names() -> list[str]:
    _load_all()
    return sorted(_METHODS)


def build_config(method: str, knobs: Knobs | None = None, **fields: Any) -> Any:
    """The config of the method named `method` from the common knobs, e.g.

        build_config("prefix_tuning", Knobs(num_virtual_tokens=10, seed=1))
        build_config("hybrid", Knobs(soft_template=PRESETS["rotten_tomatoes"].hybrid_template))

    Each method takes the knobs that apply to it (softprompt.config.Knobs); `fields` are the method's own
    options (e.g. encoder='lstm') and win over the knobs. Unknown names fail listing the known ones.
    """
    cls = get(method).config_cls
    config = cls.from_knobs(knobs or Knobs())
    if fields:
        config = cls.from_dict({**config.to_dict(), **fields})
    return config
