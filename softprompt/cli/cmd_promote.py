"""softprompt promote: point an alias (default prod) at a version; requests admitted after it use that version."""

from __future__ import annotations

import argparse

HELP = "point an alias (default prod) at a version of a task, atomically"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from softprompt.api.client import add_target_options

    p.add_argument("task", help="task name")
    p.add_argument("version", nargs="?", default=None, help="version number (default: the newest)")
    p.add_argument("--alias", default="prod", help="alias to move")
    add_target_options(p)


def run(args: argparse.Namespace) -> int:
    from softprompt.api.client import target_from_args

    out = target_from_args(args).promote(args.task, args.version, args.alias)
    print(f"{out['task']}@{out['alias']}: {out['previous']} -> {out['version']}")
    return 0
