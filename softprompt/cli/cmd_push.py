"""softprompt push: store a saved prompt as a task's next version (in a store or on a server)."""

from __future__ import annotations

import argparse

HELP = "push a saved prompt directory as a new immutable version of a task"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from softprompt.api.client import add_target_options
    from softprompt.cli.common import add_revision

    p.add_argument("task", help="task name (letters, digits, '-' and '_')")
    p.add_argument("prompt", help="saved prompt directory (manifest.json + prompt.safetensors)")
    p.add_argument("--promote", nargs="?", const="prod", default=None, metavar="ALIAS",
                   help="also point ALIAS (default prod) at the new version")
    p.add_argument("--base", default=None,
                   help="without --url: load this base model to validate (default: check against the base model "
                        "the store records, without loading it)")
    p.add_argument("--embedding-only", action="store_true",
                   help="without --url: refuse prompts that change more than input embeddings")
    add_revision(p)
    add_target_options(p)


def run(args: argparse.Namespace) -> int:
    from softprompt.api.client import target_from_args
    from softprompt.artifacts.io import read_prompt_files

    manifest, tensors = read_prompt_files(args.prompt)  # load_prompt's directory rules, before a byte is read
    target = target_from_args(args)
    if not args.url:
        import softprompt as sp

        target.base = sp.load_base(args.base, revision=args.revision) if args.base else None
        target.embedding_only = args.embedding_only
    out = target.push(args.task, manifest, tensors, promote=args.promote)
    line = f"pushed {out['model']} ({out['method']}, digest {out['digest'][:12]})"
    if out.get("promoted"):
        line += f"; {out['promoted']['alias']} -> {out['promoted']['version']}"
    print(line)
    return 0
