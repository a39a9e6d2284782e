"""`softprompt` console script: discovers the `cmd_<name>` modules beside this file, one subcommand each.

A command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int | None`; it imports
torch / transformers only inside `run`, so `softprompt --help` and every `softprompt <command> --help` are fast.
Every command takes `--config FILE` (JSON or YAML): option values by long name, overridden by typed flags.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import softprompt
from softprompt.errors import SoftPromptError

# optional packages -> the extra that installs them
OPTIONAL = {"httpx": "serve", "fastapi": "serve", "uvicorn": "serve", "prometheus_client": "serve",
            "pyarrow": "data", "datasets": "datasets"}


def _commands() -> dict[str, object]:
    import softprompt.cli as pkg

    out = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("cmd_"):
            out[info.name[4:].replace("_", "-")] = importlib.import_module(f"softprompt.cli.{info.name}")
    return out


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None, False and [] (options whose default a config field or the help states say it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS or default == [] \
                or "(default:" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `only`, the other commands get just their name and one-line help (what
    `softprompt --help` shows), so a command parses without building the fifteen others."""
    p = argparse.ArgumentParser(prog="softprompt", description=softprompt.__doc__.strip().splitlines()[0])
    p.add_argument("--version", action="version", version=f"softprompt {softprompt.__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p.commands = {}  # name -> subparser, for --config
    for name, mod in _commands().items():
        sp = sub.add_parser(name, help=mod.HELP, description=mod.HELP, formatter_class=_Formatter)
        if only is not None and name != only:
            continue
        sp.add_argument("--config", default=None, metavar="FILE",
                        help="JSON or YAML (.yaml/.yml) file of option values by long name, e.g. "
                             '{"steps": 100, "num-virtual-tokens": 8}; options typed here override it (default: none)')
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
        p.commands[name] = sp
    return p


def _config_path(argv: list[str]) -> tuple[str | None, str | None]:
    """(command, --config value) found in argv without parsing it (the file's values must be in place first)."""
    command = next((a for a in argv if not a.startswith("-")), None)
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            return command, argv[i + 1]
        if a.startswith("--config="):
            return command, a.split("=", 1)[1]
    return command, None


def _missing_extra(e: ModuleNotFoundError) -> str | None:
    root = (e.name or "").split(".")[0]
    if root in OPTIONAL:
        return f"this needs the optional package {root!r}: pip install 'softprompt[{OPTIONAL[root]}]'"
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command, config = _config_path(argv)
    parser = build_parser(only=command or "")
    if config is not None and command in parser.commands:
        try:
            from softprompt.cli.options import apply_config

            apply_config(parser.commands[command], config)
        except SoftPromptError as e:
            print(f"softprompt {command}: error: {e}", file=sys.stderr)
            return 2
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except SoftPromptError as e:
        print(f"softprompt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        hint = _missing_extra(e)
        if hint is None:
            raise
        print(f"softprompt {args.command}: error: {hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"softprompt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
