"""softprompt generate: continue texts with a saved prompt (or the plain model)."""

from __future__ import annotations

import argparse

HELP = "generate text with a saved prompt (or with no prompt)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from softprompt.cli.common import add_base_options
    from softprompt.cli.options import shell_text

    add_base_options(p)
    p.add_argument("--prompt", default=None, help="saved prompt directory (default: none, the plain model)")
    p.add_argument("text", nargs="+", type=shell_text, help="input text(s); \\n is a newline, \\t a tab")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens generated per text at most")
    p.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --sample)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --sample; 1: off)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default: unseeded)")


def run(args: argparse.Namespace) -> int:
    import softprompt as sp
    from softprompt.cli.common import load_base_from

    base = load_base_from(args)
    prompt = sp.load_prompt(args.prompt, base) if args.prompt else None
    outs = sp.generate_mixed(base, [prompt] * len(args.text), args.text, max_new_tokens=args.max_new_tokens,
                             do_sample=args.sample, temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    for t, o in zip(args.text, outs):
        print(f"{t}{o}")
    return 0
