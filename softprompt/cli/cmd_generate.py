"""softprompt generate: continue texts with a saved prompt (or the plain model)."""

from __future__ import annotations

import argparse

HELP = "generate text with a saved prompt (or with no prompt)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from softprompt.cli.common import add_base_options

    add_base_options(p)
    p.add_argument("--prompt", default=None, help="saved prompt directory (omit for the plain model)")
    p.add_argument("text", nargs="+", help="input text(s)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)


def run(args: argparse.Namespace) -> int:
    import softprompt as sp

    base = sp.load_base(args.base, dtype=args.dtype, device=args.device)
    prompt = sp.load_prompt(args.prompt, base) if args.prompt else None
    outs = sp.generate_mixed(base, [prompt] * len(args.text), args.text, max_new_tokens=args.max_new_tokens,
                             do_sample=args.sample, temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    for t, o in zip(args.text, outs):
        print(f"{t}{o}")
    return 0
