"""softprompt train: train any method on any base model and save the prompt."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train a soft prompt (any method) on a data set and save it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from softprompt.cli.common import add_base_options, add_data_options, add_method_options, add_progress, add_seed
    from softprompt.cli.options import add_config_options
    from softprompt.training.config import TrainConfig

    add_base_options(p)
    add_data_options(p)
    p.add_argument("--validation", default=None,
                   help="validation file (default: a stratified 10%% of --data, or the DatasetDict's own split)")
    p.add_argument("--test", default=None,
                   help="test file evaluated at the end (default: a stratified 10%% of --data, or the DatasetDict's "
                        "own split)")
    p.add_argument("--max-length", type=int, default=256, help="truncate inputs to this many tokens")
    p.add_argument("--out", default="runs/train", help="run directory (checkpoints, metrics, prompt)")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    add_progress(p)
    add_seed(p)
    add_method_options(p)
    add_config_options(p.add_argument_group("training"), TrainConfig, "train", skip=("seed",))


def prepare(args: argparse.Namespace):
    """Everything the run needs except the model, validated: (data, method config, task, train config)."""
    import softprompt as sp
    from softprompt.cli.common import method_config, parse_fields, parse_labels
    from softprompt.cli.options import build
    from softprompt.training.config import TrainConfig
    from softprompt.training.presets import PRESETS
    from softprompt.training.run import load_data, make_task

    tcfg = build(TrainConfig, args, "train", seed=args.seed)
    template = args.template
    if args.method == "hybrid" and not template:  # a hybrid prompt's soft slots live in its template
        if args.data not in PRESETS:
            raise sp.InputError("--method hybrid needs --template with {soft:N} slots, e.g. "
                                "'{soft:8} Review: {text} {soft:2} Sentiment: {label}'")
        template = PRESETS[args.data].hybrid_template
    config = method_config(args, template=template, seed=args.seed)
    data = load_data(args.data, seed=args.seed, validation=args.validation, test=args.test,
                     fields=parse_fields(args))
    task = make_task(data.name, getattr(config, "template", None) or template, parse_labels(args.labels),
                     args.max_length, data.labels)
    return data, config, task, tcfg


def run(args: argparse.Namespace) -> int:
    import softprompt as sp
    from softprompt.training.metrics import plot_curves, table
    from softprompt.training.run import fit
    from softprompt.training.task import evaluate

    data, config, task, tcfg = prepare(args)  # validated before the model loads
    base = sp.load_base(args.base, dtype=args.dtype, device=args.device)
    prompted = sp.attach(base, config)
    out = Path(args.out)
    res = fit(prompted, task, data, tcfg, out_dir=out, progress=not args.no_progress, resume=not args.no_resume)
    rows = [{"split": "validation (best)", "accuracy": res.best_metric, "step": res.best_step}]
    if data.test:
        ev = evaluate(base, prompted, task, task.encode_all(data.test, base.tokenizer), progress=not args.no_progress)
        rows.append({"split": "test", "accuracy": ev["accuracy"], "step": res.best_step})
    path = prompted.save(out / "prompt", **task.to_extra(), results=rows)
    plot_curves(res.history, out / "curves.png", title=f"{prompted.method} on {data.name}")
    print(table(rows, ["split", "accuracy", "step"]))
    size = sum(f.stat().st_size for f in path.iterdir())
    print(f"saved {path} ({size / 1024:.1f} KiB); curves: {out / 'curves.png'}; metrics: {out / 'metrics.jsonl'}")
    return 0
