"""Frozen config dataclasses: shared validation helpers and (de)serialisation.

A method config holds only what the user chose. Facts about the model (hidden size, layers,
heads) are read from the loaded model, never stored in a config.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, ClassVar, Literal

from softprompt.errors import ConfigError

Init = Literal["random", "vocab", "text", "labels"]


@dataclasses.dataclass(frozen=True)
class ConfigBase:
    """Validation at construction (every problem at once) and dict round-trips for the manifest."""

    method: ClassVar[str] = ""

    def __post_init__(self) -> None:
        problems = type_problems(self)
        bad = {p.split("=", 1)[0] for p in problems}
        try:  # range checks may trip over a wrongly typed field: then its type problem is the report
            problems += [p for p in self.problems() if p.split("=", 1)[0] not in bad]
        except (TypeError, AttributeError, ValueError):
            pass
        if problems:  # in field order, whichever check found them
            order = {f.name: i for i, f in enumerate(dataclasses.fields(self))}
            problems.sort(key=lambda p: order.get(p.split("=", 1)[0], len(order)))
            raise ConfigError(problems, where=type(self).__name__)

    def problems(self) -> list[str]:
        return []

    def to_dict(self) -> dict[str, Any]:
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}
        return {"method": self.method, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConfigBase:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields) - {"method"})
        if unknown:
            raise ConfigError([f"unknown field(s) {unknown} for {cls.__name__}"], where=cls.__name__)
        kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields}
        return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class MethodConfig(ConfigBase):
    """Fields shared by the soft-token methods. Subclasses add their own and extend `problems`."""

    num_virtual_tokens: int = 20
    """Number of virtual (soft) tokens the prompt adds per request."""

    init: Init = "vocab"
    """How the soft vectors start: random (normal), vocab (embeddings of sampled vocabulary tokens), text (the
    embeddings of init_text) or labels (the class-label words, then vocabulary samples)."""

    init_text: str | None = None
    """Text for init='text' (a discrete prompt, tiled or truncated to the number of tokens)."""

    init_labels: tuple[str, ...] | None = None
    """Class-label words for init='labels'; the rest of the tokens are sampled from the vocabulary."""

    seed: int = 0
    """Seed for the random parts of the initialisation."""

    inits: ClassVar[tuple[str, ...]] = typing.get_args(Init)

    def __post_init__(self) -> None:
        if self.init_labels is not None and not isinstance(self.init_labels, tuple):
            object.__setattr__(self, "init_labels", tuple(self.init_labels))
        super().__post_init__()

    def problems(self) -> list[str]:
        """Every problem with this config (empty when valid)."""
        out = []
        n = self.num_virtual_tokens
        if not isinstance(n, int) or isinstance(n, bool) or n < 1 or n > 4096:
            out.append(f"num_virtual_tokens={n!r}: must be an integer in [1, 4096]")
        if self.init not in self.inits:
            out.append(f"init={self.init!r}: must be one of {', '.join(self.inits)}")
        if self.init == "text" and not (self.init_text and self.init_text.strip()):
            out.append("init='text' needs init_text: pass the discrete prompt to start from")
        if self.init == "labels" and not self.init_labels:
            out.append("init='labels' needs init_labels: pass the class-label words, e.g. ('positive', 'negative')")
        return out


def _accepts(tp: Any, value: Any) -> bool:
    """Does a value fit a resolved field type (`int`, `str | None`, `Literal[...]`, `tuple[str, ...] | None`)?"""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(alt, value) for alt in typing.get_args(tp))
    if origin is typing.Literal:
        return any(value == v and type(value) is type(v) for v in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_accepts(args[0], v) for v in value)
        return len(args) == len(value) and all(_accepts(a, v) for a, v in zip(args, value))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return True  # a type these configs do not use is not checked here (problems() may)


def describe(tp: Any) -> str:
    """A field type in words for error messages: `int`, `one of 'a', 'b'`, `int or None`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(alt) for alt in typing.get_args(tp))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        return f"a list of {describe(args[0])}" if len(args) == 2 and args[1] is Ellipsis else str(tp)
    return "None" if tp is type(None) else getattr(tp, "__name__", str(tp))


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Resolved types of a dataclass's fields (annotations are strings under `from __future__ import annotations`)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def type_problems(config: Any) -> list[str]:
    """A problem for every field whose value does not have the declared type."""
    types_ = field_types(type(config))
    out = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if not _accepts(types_[f.name], value):
            out.append(f"{f.name}={value!r}: must be {describe(types_[f.name])}")
    return out


@functools.cache
def _module_classes(path: str) -> dict[str, Any]:
    """Top-level class definitions of a source file, parsed once (ast, no import, no inspect)."""
    import ast

    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field docstrings of a dataclass and its bases (the one source of truth for CLI help)."""
    import ast
    import sys

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        path = getattr(sys.modules.get(klass.__module__), "__file__", None)
        if not dataclasses.is_dataclass(klass) or not path:
            continue
        node = _module_classes(path).get(klass.__name__)
        if node is None:
            continue
        for a, b in zip(node.body, node.body[1:]):
            if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name):
                if isinstance(b, ast.Expr) and isinstance(getattr(b, "value", None), ast.Constant):
                    docs[a.target.id] = " ".join(str(b.value.value).split())
    return docs
