"""softprompt list: the tenant's tasks, their versions and aliases."""

from __future__ import annotations

import argparse
import json

HELP = "list your tasks, their versions and aliases"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from softprompt.api.client import add_target_options

    p.add_argument("--json", action="store_true", help="print JSON")
    add_target_options(p)


def run(args: argparse.Namespace) -> int:
    from softprompt.api.client import target_from_args

    tasks = target_from_args(args).list()
    if args.json:
        print(json.dumps(tasks, indent=2))
        return 0
    for t in tasks:
        aliases = ", ".join(f"{a}->{v}" for a, v in sorted(t["aliases"].items())) or "no aliases"
        versions = ", ".join(f"{v['version']}:{v['method']}" for v in t["versions"])
        print(f"{t['task']}\t{aliases}\tversions {versions}")
    return 0
