"""softprompt train: train any method on any base model and save the prompt.

Data-parallel over N processes (the same recipe; `--batch-size` is the global batch, split across them):

    torchrun --nproc-per-node 2 -m softprompt.cli.main train --data rotten_tomatoes --batch-size 16 --out runs/dp
"""

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
    from softprompt.cli.common import method_config, method_configs, parse_fields, parse_labels
    from softprompt.cli.options import build
    from softprompt.config import Knobs
    from softprompt.training.config import TrainConfig
    from softprompt.training.presets import PRESETS
    from softprompt.training.run import load_data, make_task

    tcfg = build(TrainConfig, args, "train", seed=args.seed)
    # what the method takes from the common knobs (a hybrid prompt: --template, else the preset's soft template);
    # the method's own flags win over these
    soft = PRESETS[args.data].hybrid_template if args.data in PRESETS else None
    implied = method_configs()[args.method].from_knobs(Knobs(template=args.template, soft_template=soft,
                                                             seed=args.seed))
    config = method_config(args, **{k: v for k, v in implied.to_dict().items() if k != "method"})
    data = load_data(args.data, seed=args.seed, validation=args.validation, test=args.test,
                     fields=parse_fields(args))
    task = make_task(data.name, config.task_template() or args.template, parse_labels(args.labels),
                     args.max_length, data.labels)
    return data, config, task, tcfg


def run(args: argparse.Namespace) -> int:
    import softprompt as sp
    from softprompt.cli.common import load_base_from
    from softprompt.training.distributed import group
    from softprompt.training.metrics import plot_curves, table
    from softprompt.training.run import fit
    from softprompt.training.task import evaluate

    data, config, task, tcfg = prepare(args)  # validated before the model loads
    procs = group()  # under torchrun / accelerate launch: join the processes (and pick this one's GPU) first
    base = load_base_from(args)
    prompted = sp.attach(base, config)
    out = Path(args.out)
    res = fit(prompted, task, data, tcfg, out_dir=out, progress=not args.no_progress, resume=not args.no_resume)
    if not procs.is_main:  # every process trained the same prompt; the first one tests, saves and reports
        return 0
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
