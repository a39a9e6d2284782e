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
    from softprompt.cli.common import (
        add_base_options,
        add_data_options,
        add_limit,
        add_num_virtual_tokens,
        add_progress,
        add_seed,
        method_configs,
    )
    from softprompt.cli.options import add_config_options, shell_text
    from softprompt.training.config import TrainConfig

    add_base_options(p)
    add_data_options(p)
    p.add_argument("--test", default=None,
                   help="test file (default: the built-in test split, or a stratified 10%% of --data)")
    p.add_argument("--hybrid-template", default=None, type=shell_text,
                   help="template of the hybrid method (\\n is a newline; default: the preset's)")
    p.add_argument("--methods", default="prompt_tuning,prefix_tuning,p_tuning",
                   help=f"comma-separated methods among {', '.join(sorted(method_configs()))}")
    add_config_options(p, TrainConfig, "train", only=("steps", "batch_size", "warmup_steps"), defaults={"steps": 100},
                       notes={"warmup_steps": "steps/5, at most 20"})
    add_num_virtual_tokens(p)
    add_limit(p, default=200)
    p.add_argument("--latency-batch", type=int, default=8, help="requests in the timed batch")
    p.add_argument("--latency-repeats", type=int, default=7, help="timed repeats (the median is reported)")
    p.add_argument("--constraint", action="append", default=[], choices=["embedding-only"],
                   help="embedding-only: the server accepts input embeddings only (no K/V prefix, no adapters)")
    p.add_argument("--max-bytes-per-task", type=parse_bytes, default=None, help="e.g. 100KiB (default: no limit)")
    p.add_argument("--max-latency-ms", type=float, default=None, help="per batched request (default: no limit)")
    p.add_argument("--accuracy-tolerance", type=float, default=0.01,
                   help="accuracies this close to the best count as tied (ties go to latency, then bytes)")
    p.add_argument("--reference", default="lora", choices=["lora", "none"],
                   help="lora: add PEFT's LoRA r=8 on q_proj, v_proj, same recipe, as the row to beat (needs peft); "
                        "none: soft-prompt methods only")
    add_seed(p)
    p.add_argument("--out", default="runs/compare", help="directory of report.md, the PNGs and the artifacts")
    add_progress(p)


def run(args: argparse.Namespace) -> int:
    from softprompt.cli.common import load_base_from, method_configs, parse_fields, parse_labels
    from softprompt.cli.options import values
    from softprompt.errors import InputError
    from softprompt.report import Constraints, measure, recommend, write_report
    from softprompt.training.config import TrainConfig
    from softprompt.training.presets import PRESETS
    from softprompt.training.run import load_data, make_task

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in method_configs()]
    if unknown or not methods:
        raise InputError(f"--methods {args.methods!r}: unknown {unknown or 'empty list'}; choose among "
                         f"{', '.join(sorted(method_configs()))}")
    given = values(args, "train")
    steps = given.get("steps", 100)
    cfg = TrainConfig(**{"warmup_steps": min(20, max(1, steps // 5)), **given, "seed": args.seed})
    num_tokens = values(args, "method").get("num_virtual_tokens", 20)
    data = load_data(args.data, seed=args.seed, test=args.test, fields=parse_fields(args))
    task = make_task(data.name, args.template, parse_labels(args.labels), data_labels=data.labels)
    test = data.test or data.validation
    if not test:
        raise InputError("no test records: pass --test")
    test = test[: args.limit or None]
    hybrid = args.hybrid_template or (PRESETS[data.name].hybrid_template if data.name in PRESETS else None)
    base = load_base_from(args)
    ms = measure(base, task, data.train, test, methods, cfg, args.out, num_virtual_tokens=num_tokens,
                 hybrid_template=hybrid, latency_batch=args.latency_batch, latency_repeats=args.latency_repeats,
                 progress=not args.no_progress, reference=None if args.reference == "none" else args.reference)
    constraints = Constraints(embedding_only="embedding-only" in args.constraint,
                              max_bytes_per_task=args.max_bytes_per_task, max_latency_ms=args.max_latency_ms,
                              accuracy_tolerance=args.accuracy_tolerance)
    rec = recommend(ms, constraints)
    setup = {"base": f"{base.name} ({args.dtype}, {base.device})", "data": f"{data.name}: {len(data.train)} training "
             f"records, {len(test)} test records scored", "template": repr(task.template.source),
             "training": f"{cfg.steps} steps, batch {cfg.batch_size}, method-default learning rates",
             "methods": ", ".join(methods) + ("" if args.reference == "none" else
                                              f"; reference: {args.reference} r=8 on q_proj, v_proj (PEFT)"),
             "request": f"{args.latency_batch} test requests in one batch, "
             f"median of {args.latency_repeats}"}
    path = write_report(ms, rec, args.out, setup)
    print(f"recommendation: {rec.choice or 'none (no method meets the constraints)'}")
    print(f"report: {path}")
    return 0
