"""softprompt compare: train several methods on one task, measure them, and recommend one under constraints."""

from __future__ import annotations

import argparse
import re

HELP = "compare methods on one task (accuracy, size, speed, serving) and recommend one; writes a Markdown report"

UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6, "mib": 2**20, "g": 10**9,
         "gb": 10**9, "gib": 2**30}


def parse_bytes(s: str) -> int:
    """'65536', '64KiB', '1.5MB' -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", s)
    if not m or m.group(2).lower() not in UNITS:
        raise argparse.ArgumentTypeError(f"{s!r}: give bytes as a number with an optional unit (KB, KiB, MB, MiB, GB)")
    return int(float(m.group(1)) * UNITS[m.group(2).lower()])


def add_arguments(p: argparse.ArgumentParser) -> None:
    from softprompt import registry
    from softprompt.cli.common import add_base_options, add_data_options

    add_base_options(p)
    add_data_options(p)
    p.add_argument("--test", default=None, help="test file (default: the built-in test split, or 10%% of --data)")
    p.add_argument("--hybrid-template", default=None, help="template of the hybrid method (default: the preset's)")
    p.add_argument("--methods", default="prompt_tuning,prefix_tuning,p_tuning",
                   help=f"comma-separated methods among {', '.join(registry.names())}")
    p.add_argument("--steps", type=int, default=100, help="training steps per method")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-virtual-tokens", type=int, default=20)
    p.add_argument("--test-limit", type=int, default=200, help="test examples scored per method (0: all)")
    p.add_argument("--latency-batch", type=int, default=8, help="requests in the timed batch")
    p.add_argument("--latency-repeats", type=int, default=7)
    p.add_argument("--constraint", action="append", default=[], choices=["embedding-only"],
                   help="embedding-only: the server accepts input embeddings only (no K/V prefix, no adapters)")
    p.add_argument("--max-bytes-per-task", type=parse_bytes, default=None, help="e.g. 100KiB")
    p.add_argument("--max-latency-ms", type=float, default=None, help="per batched request")
    p.add_argument("--accuracy-tolerance", type=float, default=0.01,
                   help="accuracies this close to the best count as tied (ties go to latency, then bytes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/compare", help="directory of report.md, the PNGs and the artifacts")
    p.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    import softprompt as sp
    from softprompt.cli.common import parse_fields, parse_labels
    from softprompt.errors import InputError
    from softprompt.report import Constraints, measure, recommend, write_report
    from softprompt.training.presets import PRESETS
    from softprompt.training.run import load_data, make_task
    from softprompt.training.tune import TrainConfig

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        sp.registry.get(m)  # unknown names fail here, listing the known ones
    data = load_data(args.data, seed=args.seed, test=args.test, fields=parse_fields(args))
    task = make_task(data.name, args.template, parse_labels(args.labels), data_labels=data.labels)
    test = data.test or data.validation
    if not test:
        raise InputError("no test records: pass --test")
    test = test[: args.test_limit or None]
    hybrid = args.hybrid_template or (PRESETS[data.name].hybrid_template if data.name in PRESETS else None)
    base = sp.load_base(args.base, dtype=args.dtype, device=args.device)
    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                      warmup_steps=min(20, max(1, args.steps // 5)))
    ms = measure(base, task, data.train, test, methods, cfg, args.out, num_virtual_tokens=args.num_virtual_tokens,
                 hybrid_template=hybrid, latency_batch=args.latency_batch, latency_repeats=args.latency_repeats,
                 progress=not args.no_progress)
    constraints = Constraints(embedding_only="embedding-only" in args.constraint,
                              max_bytes_per_task=args.max_bytes_per_task, max_latency_ms=args.max_latency_ms,
                              accuracy_tolerance=args.accuracy_tolerance)
    rec = recommend(ms, constraints)
    setup = {"base": f"{base.name} ({args.dtype}, {base.device})", "data": f"{data.name}: {len(data.train)} training "
             f"records, {len(test)} test records scored", "template": repr(task.template.source),
             "training": f"{args.steps} steps, batch {args.batch_size}, method-default learning rates",
             "methods": ", ".join(methods), "request": f"{args.latency_batch} test requests in one batch, "
             f"median of {args.latency_repeats}"}
    path = write_report(ms, rec, args.out, setup)
    print(f"recommendation: {rec.choice or 'none (no method meets the constraints)'}")
    print(f"report: {path}")
    return 0
