"""Method registry: name -> (Config class, Module class). Methods register themselves on import."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from softprompt.errors import ConfigError


@dataclass(frozen=True)
class MethodSpec:
    name: str
    config_cls: type
    module_cls: type
    embedding_only: bool
    """True when the method changes only input embeddings (servable on an unmodified model)."""


_METHODS: dict[str, MethodSpec] = {}


def register(name: str, config_cls: type, module_cls: type, *, embedding_only: bool) -> None:
    if name in _METHODS and _METHODS[name].module_cls is not module_cls:
        raise RuntimeError(f"method {name!r} registered twice")
    _METHODS[name] = MethodSpec(name, config_cls, module_cls, embedding_only)


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
