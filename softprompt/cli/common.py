"""Options shared by CLI commands (base model, data, method, progress, limits) and their parsing helpers.

The flags of a config come from the config dataclass itself (cli/options.py). Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
from pathlib import Path
from typing import Any

from softprompt.cli.options import add_config_options, alias, build, shell_text
from softprompt.config import MethodConfig

TEXT_FIELDS = ("template", "init_text")  # config fields read with shell_text (\n is a newline)
SEED_HELP = "Seed of everything random in the run: the data split, the prompt's initialisation and the data order"


def method_configs() -> dict[str, type]:
    """Method name -> config class, from each `methods/<name>/config.py` alone.

    The method packages import their torch modules; the config modules do not, so `--help` loads only these.
    Each is loaded under its own module name, so the registry gets the very same classes when a command
    later imports the method packages (tests/cli checks the identity and that the names match the registry).
    """
    root = Path(__file__).resolve().parent.parent / "methods"
    out = {}
    for pkg in sorted(p for p in root.iterdir() if (p / "config.py").is_file()):
        name = f"softprompt.methods.{pkg.name}.config"
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, pkg / "config.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[name]
                raise
        for obj in vars(module).values():
            if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == name \
                    and getattr(obj, "method", ""):
                out[obj.method] = obj
    return out


def add_base_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", default="smollm2",
                        help="base model: smollm2, gemma3-270m, a local Hugging Face directory, a .gguf file, or a "
                             "Hub id (org/name) already in the Hugging Face cache")
    add_revision(parser)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="dtype of the frozen model")
    parser.add_argument("--device", default=None, help="torch device (default: cpu)")


def add_revision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--revision", default=None,
                        help="with a Hub id --base: the branch, tag or commit of its cached snapshot (default: main)")


def load_base_from(args: argparse.Namespace) -> Any:
    """The base model that --base, --revision, --dtype and --device name (add_base_options)."""
    import softprompt as sp

    return sp.load_base(args.base, revision=args.revision, dtype=args.dtype, device=args.device)


def add_data_options(parser: argparse.ArgumentParser, builtin_only: bool = False) -> None:
    parser.add_argument("--data", default="rotten_tomatoes",
                        help="built-in data set (rotten_tomatoes, bbc_news, drug_reviews), a CSV/TSV/JSONL/parquet/"
                             "arrow file, or a folder written by datasets' save_to_disk (a DatasetDict folder's "
                             "train/validation/test splits are used as they are)")
    parser.add_argument("--field", action="append", default=[], metavar="SLOT=COLUMN",
                        help="map a template slot to a column of a data file (repeatable; an error for a built-in "
                             "data set, whose fields are text and label)")
    parser.add_argument("--template", default=None, type=shell_text,
                        help="template, e.g. 'Review: {text}\\nSentiment: {label}' (\\n is a newline; default: "
                             "the built-in data set's)")
    parser.add_argument("--labels", default=None,
                        help='verbalizer as JSON {"class": ["word", ...]} or comma-separated class words (default: '
                             "the built-in data set's; for a file, omit for a generation task: loss on the answer "
                             "slot)")


def add_method_options(parser: argparse.ArgumentParser) -> None:
    """--method and every method's options; the template and seed are the command's own flags."""
    configs = method_configs()
    parser.add_argument("--method", default="prompt_tuning", choices=sorted(configs), help="soft-prompt method")
    group = parser.add_argument_group("method options (each applies to the methods that have it)")
    for name in sorted(configs):
        add_config_options(group, configs[name], "method", skip=("template", "seed"), text=TEXT_FIELDS)


def method_config(args: argparse.Namespace, **shared: Any) -> Any:
    """The chosen method's config from the options the user gave, plus `shared` (template, seed) where it has them."""
    from softprompt.cli.options import values
    from softprompt.errors import InputError

    configs = method_configs()
    cls = configs[args.method]
    names = {f.name for f in dataclasses.fields(cls)}
    stray = sorted(k for k in values(args, "method") if k not in names)
    if stray:
        has = {k: [m for m, c in sorted(configs.items()) if k in {f.name for f in dataclasses.fields(c)}]
               for k in stray}
        raise InputError("; ".join(f"--{k.replace('_', '-')} does not apply to --method {args.method} (it is an "
                                   f"option of {', '.join(has[k]) or 'no method'})" for k in stray))
    return build(cls, args, "method", **shared)


def add_num_virtual_tokens(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    """--num-virtual-tokens from MethodConfig (one name in every command), old spelling --tokens hidden."""
    add_config_options(parser, MethodConfig, "method", only=("num_virtual_tokens",),
                       defaults={} if default is None else {"num_virtual_tokens": default})
    alias(parser, "--tokens", "--num-virtual-tokens")


def add_seed(parser: argparse.ArgumentParser, help: str = SEED_HELP) -> None:
    parser.add_argument("--seed", type=int, default=0, help=help)


def add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_limit(parser: argparse.ArgumentParser, default: int = 0, what: str = "test") -> None:
    """--limit N (one name in every command; old spelling --test-limit hidden)."""
    parser.add_argument("--limit", type=int, default=default,
                        help=f"score only the first N examples of the {what} split (0: all)")
    alias(parser, "--test-limit", "--limit")


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
