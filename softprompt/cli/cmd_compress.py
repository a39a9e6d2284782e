"""softprompt compress: distil a long context into a few soft tokens and save them as a prompt artifact.

    softprompt compress --context system.txt --queries questions.txt --num-virtual-tokens 10 --form prompt --out runs/c
    softprompt compress --demo rotten_tomatoes --num-virtual-tokens 10 --steps 120 --out runs/rt

Prints, for the full context, the compressed prompt and no context: tokens, compression ratio, mean KL to the
teacher and greedy next-token agreement on held-out queries, the demo's task metric, and the median prefill time
per request. The prompt is saved in OUT/prompt, the table in OUT/report.json.
"""

from __future__ import annotations

import argparse

HELP = "compress a long context into a few soft tokens by distillation (prompt or prefix form)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from softprompt.cli.common import add_base_options, add_limit, add_progress
    from softprompt.cli.options import add_config_options, alias, shell_text
    from softprompt.training.config import DistillConfig

    add_base_options(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--context", default=None, metavar="FILE",
                     help="file holding the context to compress (no default: give this, --context-text or --demo)")
    src.add_argument("--context-text", default=None, metavar="TEXT", type=shell_text,
                     help="the context itself (\\n is a newline; no default)")
    src.add_argument("--demo", default=None, choices=["rotten_tomatoes", "persona", "product"],
                     help="a built-in case: few-shot rotten_tomatoes (test accuracy), a pirate persona, or a product "
                          "sheet of facts the model cannot know (held-out accuracy) (no default)")
    p.add_argument("--queries", default=None, metavar="FILE",
                   help="distillation queries: one per line (\\n for newlines) or JSONL with query/text "
                        "(+ answer) (default: the model writes them from the context)")
    p.add_argument("--held-out", default=None, metavar="FILE",
                   help="queries used only to measure fidelity (default: --num-held-out of the queries)")
    p.add_argument("--store-context", action="store_true",
                   help="store the context text in the manifest (by default only its sha256 and token count)")
    add_limit(p, what="rotten_tomatoes demo's test")
    p.add_argument("--answers", action="store_true",
                   help="product demo: each training query carries its fact's true answer, the reference that "
                        "--ce-weight trains on")
    p.add_argument("--timing-queries", type=int, default=8, help="held-out queries timed for the prefill column")
    p.add_argument("--timing-repeats", type=int, default=3, help="timed repeats per query (median reported)")
    p.add_argument("--out", default="runs/compress", help="run directory; the prompt is saved in OUT/prompt")
    add_progress(p)
    group = p.add_argument_group("distillation")
    add_config_options(group, DistillConfig, "distill",  # the same names as in train; --held-out is the FILE
                       rename={"tokens": "num_virtual_tokens", "held_out": "num_held_out"})
    alias(group, "--tokens", "--num-virtual-tokens")


def read_queries(path: str) -> list:
    """Queries from a file: JSONL objects with "query"/"text" (and optional "answer"), else one per line
    (a literal \\n in a line stands for a newline)."""
    import json
    from pathlib import Path

    from softprompt.errors import InputError

    try:
        lines = [ln for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError as e:
        raise InputError(f"cannot read queries file {path}: {e.strerror}") from None
    if lines and all(ln.lstrip().startswith("{") for ln in lines):
        try:
            return [json.loads(ln) for ln in lines]
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: invalid JSONL ({e}); write one JSON object per line") from None
    return [ln.replace("\\n", "\n") for ln in lines]


def print_report(rows: list[dict], metric_name: str | None) -> None:
    from softprompt.training.metrics import table

    cols = ["prompt", "tokens", "ratio", "held-out KL", "agreement"] + ([metric_name] if metric_name else [])
    cells = [{"prompt": r["prompt"], "tokens": r["tokens"], "ratio": "-" if r["ratio"] is None else
              f"{r['ratio']:.1f}x", "held-out KL": r["kl"], "agreement": r["agreement"],
              metric_name: r["metric"], "request tokens": f"{r['request_tokens']:.0f}",
              "prefill ms": f"{r['prefill_ms']:.1f}"} for r in rows]
    print(table(cells, cols + ["request tokens", "prefill ms"]))


def run(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from softprompt.cli.common import load_base_from
    from softprompt.cli.options import values
    from softprompt.errors import InputError
    from softprompt.training.config import DistillConfig
    from softprompt.training.distill import compress, report

    t0 = time.time()
    given = values(args, "distill")
    DistillConfig(**given)  # the user's options are checked before any file is read or model loaded
    case = None
    if args.demo:
        from softprompt.training.contexts import make_demo

        flags = {"test_limit": "--limit", "answers": "--answers"}
        try:
            case = make_demo(args.demo, test_limit=args.limit or None, answers=args.answers or None)
        except ValueError as e:  # a demo option the chosen demo lacks
            raise InputError(f"{e} ({', '.join(f'{f} is {o}' for o, f in flags.items())})") from None
        context, queries, held = case.context, case.queries, case.held_out
    elif args.context or args.context_text is not None:
        try:
            context = Path(args.context).read_text(encoding="utf-8") if args.context else args.context_text
        except OSError as e:
            raise InputError(f"cannot read --context {args.context}: {e.strerror}") from None
        queries = None
        held = None
    else:
        raise InputError("nothing to compress: pass --context FILE, --context-text STR or --demo NAME")
    if args.queries:
        queries = read_queries(args.queries)
        if not queries:
            raise InputError(f"no queries in {args.queries}: write one query per line")
    if args.held_out:
        held = read_queries(args.held_out)
        if not held:
            raise InputError(f"no queries in --held-out {args.held_out}: write one query per line")
    cfg = DistillConfig(**{**(case.overrides if case else {}), **given})
    base = load_base_from(args)
    comp = compress(base, context, queries, cfg, held_out=held, store_context=args.store_context,
                    progress=not args.no_progress)
    rows = report(base, comp, case.metric if case else None, args.timing_queries, args.timing_repeats)
    out = Path(args.out)
    path = comp.prompted.save(out / "prompt", evaluation=rows, metric=case.metric_name if case else None)
    (out / "report.json").write_text(json.dumps({"rows": rows, "before_training": comp.before,
                                                  "history": comp.history, "seconds": comp.seconds}, indent=1))
    c = comp.prompted.extra["compression"]
    print(f"\ncontext: {c['context_tokens']} tokens -> {cfg.tokens} soft tokens ({cfg.form}), "
          f"ratio {c['ratio']:.1f}x; queries: {c['queries']['train']} train / {c['queries']['held_out']} held-out"
          f"{' (self-generated)' if queries is None else ''}")
    print(f"held-out KL before training {comp.before['kl']:.4f} -> after {comp.fidelity['kl']:.4f}; "
          f"first-token agreement {comp.fidelity['first_token_agreement']:.3f}\n")
    print_report(rows, case.metric_name if case else None)
    print(f"\nsaved {path}; report {out / 'report.json'}; total time {time.time() - t0:.0f} s")
    return 0
