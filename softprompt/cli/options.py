r"""One source of truth for the CLI: flags generated from the config dataclasses, and a --config file under them.

- A config field `num_virtual_tokens: int = 20` with its docstring becomes `--num-virtual-tokens N` with that
  help and "(default: 20)"; a `Literal[...]` type gives the choices, `bool` a --flag/--no-flag pair, a
  `tuple[X, ...]` several values. The parsed value lands in `args.<namespace>.<field>`-style dests (see `dest`),
  so two configs can never collide silently: a flag two namespaces want is an error when the parser is built.
- `--config run.json` (or .yaml / .yml) holds flag values by long name (`steps`, `num-virtual-tokens` or
  `num_virtual_tokens`); flags typed on the command line override it. Checked before anything runs.
- Text options (templates, init text, inputs) read `\n` as a newline and `\t` as a tab (`\\` for a backslash),
  which is what a user typing `'Review: {text}\nSentiment: {label}'` in a shell means.

Nothing here imports torch: `softprompt <command> --help` stays fast. Why not tyro or jsonargparse: each
would be a new dependency (and import time on every --help) for what is one loop over `dataclasses.fields()`
here, and the loop keeps what this CLI needs: per-config dests, a collision check, shell text, old names.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

from softprompt.config import field_docs, field_types
from softprompt.errors import InputError

_ESCAPES = {"\\": "\\", "n": "\n", "t": "\t"}


def shell_text(s: str) -> str:
    r"""A text option as users mean it: `\n` is a newline, `\t` a tab, `\\` a backslash; other text is kept."""
    return re.sub(r"\\([\\nt])", lambda m: _ESCAPES[m.group(1)], s)


def shell_quote(s: str) -> str:
    r"""The shell argument that `shell_text` reads back as `s` (newlines written as `\n`)."""
    import shlex

    return shlex.quote(s.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t"))


def dest(namespace: str, name: str) -> str:
    """Where a config field's value lands in the parsed args, e.g. `train.steps`."""
    return f"{namespace}.{name}"


def _strip_optional(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return tp


def _kind(tp: Any) -> dict[str, Any]:
    """argparse keywords for a resolved field type."""
    tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        values = typing.get_args(tp)
        return {"choices": values, "type": type(values[0])}
    if origin is tuple:
        inner = _kind(typing.get_args(tp)[0])
        return {**inner, "nargs": "+"}
    if tp is bool:
        return {"action": argparse.BooleanOptionalAction}
    if tp in (int, float):
        return {"type": tp}
    return {"type": str}


def add_config_options(parser: Any, config_cls: type, namespace: str, *, rename: dict[str, str] | None = None,
                       skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None, text: tuple[str, ...] = (),
                       defaults: dict[str, Any] | None = None, notes: dict[str, str] | None = None) -> None:
    """One flag per field of `config_cls` (help from its docstring, the dataclass default shown, choices from
    `Literal`). `rename` maps field -> flag name; `skip` leaves fields out (the command sets them), `only` keeps
    just those; `text` marks fields read with `shell_text`; `defaults` are this command's own defaults (shown
    and used), `notes` describe a default the command computes. A flag already added under the same namespace
    is shared (method options); one under another namespace is a programming error, raised here rather than
    mis-parsed later."""
    rename, defaults, notes = rename or {}, defaults or {}, notes or {}
    docs, types_ = field_docs(config_cls), field_types(config_cls)
    for f in dataclasses.fields(config_cls):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        flag = "--" + rename.get(f.name, f.name).replace("_", "-")
        existing = parser._option_string_actions.get(flag)
        if existing is not None:
            if existing.dest != dest(namespace, f.name):
                raise RuntimeError(f"{flag} of {config_cls.__name__}.{f.name} collides with {existing.dest}: "
                                   "rename or skip one of them")
            continue
        kw = _kind(types_[f.name])
        if f.name in text:
            kw["type"] = shell_text
        default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING else None)
        shown = f" (default: {notes[f.name]})" if f.name in notes else \
            f" (default: {_show(default)})" if default is not None else \
            "" if "default" in docs.get(f.name, "") else " (default: none)"
        helptext = (docs.get(f.name, f.name) + shown).replace("%", "%%")  # argparse %-formats help strings
        kw.update(dest=dest(namespace, f.name), default=defaults.get(f.name), help=helptext)
        if kw.get("choices") is None and "action" not in kw:
            kw["metavar"] = "TEXT" if kw.get("type") is shell_text else flag[2:].replace("-", "_").upper()
        parser.add_argument(flag, **kw)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    return repr(value) if isinstance(value, str) else str(value)


def values(args: argparse.Namespace, namespace: str) -> dict[str, Any]:
    """The fields of one namespace that the user set (flag or --config), by field name."""
    prefix = namespace + "."
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def build(config_cls: type, args: argparse.Namespace, namespace: str, **shared: Any) -> Any:
    """`config_cls` from the user's values in `namespace`, plus `shared` values for the fields it has."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    kw = {k: v for k, v in values(args, namespace).items() if k in names}
    kw.update({k: v for k, v in shared.items() if k in names and v is not None and k not in kw})
    return config_cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in kw.items()})


class Deprecated(argparse.Action):
    """A hidden old name of a flag: stores into the new flag's dest and says which name to use."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kw: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser: Any, namespace: argparse.Namespace, value: Any, option: str | None = None) -> None:
        print(f"softprompt: {option} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, value)


def alias(parser: Any, old: str, new: str) -> None:
    """Accept `old` as a hidden, deprecated spelling of the already added flag `new`."""
    action = parser._option_string_actions[new]
    parser.add_argument(old, action=Deprecated, new=new, dest=action.dest, type=action.type, help=argparse.SUPPRESS)


# ------------------------------------------------------------------------------------------------ --config


def read_config_file(path: str) -> dict[str, Any]:
    """A --config file: a JSON object (.json) or a YAML mapping (.yaml / .yml)."""
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"--config {path}: cannot read it ({e.strerror})") from None
    if p.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise InputError(f"--config {path}: not valid YAML ({e})") from None
    else:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InputError(f"--config {path}: not valid JSON ({e}); YAML files must end in .yaml or .yml") from None
    if not isinstance(data, dict):
        raise InputError(f"--config {path}: must hold a mapping of option names to values, e.g. {{\"steps\": 100}}")
    return data


def _check(action: argparse.Action, key: str, value: Any) -> str | None:
    """A problem with a config-file value for `action`, or None. String values are left for argparse to parse."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        return None if isinstance(value, bool) else f"{key}={value!r}: must be true or false"
    many = action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction)
    items = value if many else [value]
    if many and not isinstance(value, list):
        return f"{key}={value!r}: must be a list"
    for v in items:
        if action.type is int and not (isinstance(v, int) and not isinstance(v, bool)) and not isinstance(v, str):
            return f"{key}={v!r}: must be an integer"
        if action.type is float and not (isinstance(v, (int, float)) and not isinstance(v, bool)) \
                and not isinstance(v, str):
            return f"{key}={v!r}: must be a number"
        if action.type in (str, shell_text, None) and not isinstance(v, str):
            return f"{key}={v!r}: must be a string"
        if action.choices is not None and v not in action.choices:
            return f"{key}={v!r}: must be one of {', '.join(map(str, action.choices))}"
    return None


class _AppendOverFile(argparse._AppendAction):
    """A repeatable flag whose --config list is replaced, not extended, by the values typed."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, value: Any, option: str | None = None) -> None:
        typed = f"_typed_{self.dest}"
        if not getattr(namespace, typed, False):
            setattr(namespace, self.dest, [])
            setattr(namespace, typed, True)
        super().__call__(parser, namespace, value, option)


def apply_config(parser: argparse.ArgumentParser, path: str) -> None:
    """Make a --config file's values the defaults of `parser`'s flags (flags typed later override them).
    Every problem (unknown names, wrong types, bad choices) is reported at once, naming the key and the fix."""
    data = read_config_file(path)
    known = {o[2:]: a for o, a in parser._option_string_actions.items()
             if o.startswith("--") and a.help is not argparse.SUPPRESS and o not in ("--help", "--config")}
    problems, defaults = [], {}
    for key, value in data.items():
        action = known.get(str(key).replace("_", "-"))
        if action is None:
            problems.append(f"{key!r}: not an option of this command; known: {', '.join(sorted(known))}")
            continue
        problem = _check(action, str(key), value)
        if problem:
            problems.append(problem)
            continue
        defaults[action.dest] = value
        action.required = False  # given by the file
        if type(action) is argparse._AppendAction:
            action.__class__ = _AppendOverFile
    if problems:
        raise InputError(f"--config {path}: " + "; ".join(problems))
    parser.set_defaults(**defaults)
