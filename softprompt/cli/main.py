"""`softprompt` console script: discovers the `cmd_<name>` modules beside this file, one subcommand each.

A command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int | None`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import softprompt
from softprompt.errors import SoftPromptError


def _commands() -> dict[str, object]:
    import softprompt.cli as pkg

    out = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("cmd_"):
            out[info.name[4:].replace("_", "-")] = importlib.import_module(f"softprompt.cli.{info.name}")
    return out


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None (options whose default comes from a config field say it themselves)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None:
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="softprompt", description=softprompt.__doc__.strip().splitlines()[0])
    p.add_argument("--version", action="version", version=f"softprompt {softprompt.__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, mod in _commands().items():
        sp = sub.add_parser(name, help=mod.HELP, description=mod.HELP,
                            formatter_class=_Formatter)
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except SoftPromptError as e:
        print(f"softprompt {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"softprompt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
