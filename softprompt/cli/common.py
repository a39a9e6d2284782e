"""Helpers shared by CLI commands: options generated from config field docstrings, base loading."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from softprompt import registry
from softprompt.config import field_docs


def add_config_options(parser: argparse.ArgumentParser, config_cls: type, prefix: str = "") -> None:
    """One --option per dataclass field, help text from the field's docstring (one source of truth)."""
    docs = field_docs(config_cls)
    for f in dataclasses.fields(config_cls):
        flag = f"--{prefix}{f.name.replace('_', '-')}"
        default = f.default if f.default is not dataclasses.MISSING else None
        kw: dict[str, Any] = {"dest": f"{prefix}{f.name}".replace("-", "_"), "default": None,
                              "help": docs.get(f.name, "") + ("" if default is None else f" (default: {default!r})")}
        typ = str(f.type).replace(" | None", "")  # optional fields parse like their base type
        if typ == "bool":
            kw["action"] = argparse.BooleanOptionalAction
        elif typ in ("int", "float"):
            kw["type"] = int if typ == "int" else float
        elif typ.startswith("tuple"):
            kw["nargs"] = "+"
        if flag in parser._option_string_actions:  # shared field already added by another method
            continue
        parser.add_argument(flag, **kw)


def add_method_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", default="prompt_tuning", choices=registry.names(), help="soft-prompt method")
    group = parser.add_argument_group("method options (each applies to the methods that have it)")
    for name in registry.names():
        add_config_options(group, registry.get(name).config_cls)


def config_from_args(args: argparse.Namespace, **overrides: Any) -> Any:
    """Build the chosen method's config from the options the user actually gave."""
    cls = registry.get(args.method).config_cls
    kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}
    kw.update({k: v for k, v in overrides.items() if k not in kw and k in {f.name for f in dataclasses.fields(cls)}})
    return cls(**kw)


def add_base_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", default="smollm2",
                        help="base model: smollm2, gemma3-270m, a local Hugging Face directory, or a .gguf file")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="dtype of the frozen model")
    parser.add_argument("--device", default=None, help="torch device (default: cpu)")


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="rotten_tomatoes",
                        help="built-in data set (rotten_tomatoes, bbc_news, drug_reviews) or a CSV/JSONL/parquet file")
    parser.add_argument("--field", action="append", default=[], metavar="SLOT=COLUMN",
                        help="map a template slot to a data column (repeatable)")
    parser.add_argument("--template", default=None, help="template, e.g. 'Review: {text}\\nSentiment: {label}'")
    parser.add_argument("--labels", default=None,
                        help='verbalizer as JSON {"class": ["word", ...]} or comma-separated class words; '
                             "omit for a generation task (loss on the answer slot)")


def parse_fields(args: argparse.Namespace) -> dict[str, str] | None:
    from softprompt.errors import InputError

    bad = [f for f in args.field if "=" not in f]
    if bad:
        raise InputError(f"--field {bad[0]!r}: use SLOT=COLUMN, e.g. --field text=review")
    return dict(f.split("=", 1) for f in args.field) or None


def parse_labels(s: str | None):
    """--labels: JSON {"class": ["word", ...]} or comma-separated class words (each its own word)."""
    import json

    from softprompt.errors import InputError

    if s is None:
        return None
    s = s.strip()
    if s.startswith("{"):
        try:
            return json.loads(s)
        except json.JSONDecodeError as e:
            raise InputError(f"--labels is not valid JSON: {e}") from None
    return [w.strip() for w in s.split(",") if w.strip()]
