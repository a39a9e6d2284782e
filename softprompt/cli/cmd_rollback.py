"""softprompt rollback: point an alias back at the version it pointed to before its last promotion."""

from __future__ import annotations

import argparse

HELP = "point an alias (default prod) back at its previous version, atomically"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from softprompt.api.client import add_target_options

    p.add_argument("task", help="task name")
    p.add_argument("--alias", default="prod", help="alias to move")
    add_target_options(p)


def run(args: argparse.Namespace) -> int:
    from softprompt.api.client import target_from_args

    out = target_from_args(args).rollback(args.task, args.alias)
    print(f"{out['task']}@{out['alias']}: {out['rolled_back_from']} -> {out['version']}")
    return 0
