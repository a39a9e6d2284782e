"""softprompt train: train any method on any base model and save the prompt.

Data-parallel over N processes (the same recipe; `--batch-size` is the global batch, split across them):

    torchrun --nproc-per-node 2 -m softprompt.cli.main train --data rotten_tomatoes --batch-size 16 --out runs/dp
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train a soft prompt (any method) on a data set and save it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from softprompt.cli.common import add_base_options, add_config_options, add_data_options, add_method_options
    from softprompt.training.tune import TrainConfig

    add_base_options(p)
    add_data_options(p)
    p.add_argument("--validation", default=None, help="validation file (default: 10%% of --data)")
    p.add_argument("--test", default=None, help="test file evaluated at the end")
    p.add_argument("--max-length", type=int, default=256, help="truncate inputs to this many tokens")
    p.add_argument("--out", default="runs/train", help="run directory (checkpoints, metrics, prompt)")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_method_options(p)
    add_config_options(p.add_argument_group("training"), TrainConfig, prefix="")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import softprompt as sp
    from softprompt.cli.common import config_from_args, parse_fields, parse_labels
    from softprompt.training.distributed import group
    from softprompt.training.metrics import plot_curves, table
    from softprompt.training.presets import PRESETS
    from softprompt.training.run import fit, load_data, make_task
    from softprompt.training.task import evaluate
    from softprompt.training.tune import TrainConfig

    data = load_data(args.data, seed=args.seed or 0, validation=args.validation, test=args.test,
                     fields=parse_fields(args))
    # what the method takes from the common knobs (a hybrid prompt: its template, else the preset's soft one);
    # the method's own flags win over these
    soft = PRESETS[data.name].hybrid_template if data.name in PRESETS else None
    implied = sp.build_config(args.method, sp.Knobs(template=args.template, soft_template=soft))
    config = config_from_args(args, **{k: v for k, v in implied.to_dict().items() if k != "method"})  # validated
    template = config.task_template() or args.template
    task = make_task(data.name, template, parse_labels(args.labels), args.max_length, data.labels)
    tcfg = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                          if getattr(args, f.name, None) is not None})
    procs = group()  # under torchrun / accelerate launch: join the processes (and pick this one's GPU) first
    base = sp.load_base(args.base, dtype=args.dtype, device=args.device)
    prompted = sp.attach(base, config)
    out = Path(args.out)
    res = fit(prompted, task, data, tcfg, out_dir=out, progress=not args.no_progress, resume=not args.no_resume)
    if not procs.is_main:  # every process trained the same prompt; the first one tests, saves and reports
        return 0
    rows = [{"split": "validation (best)", "accuracy": res.best_metric, "step": res.best_step}]
    if data.test:
        ev = evaluate(base, prompted, task, task.encode_all(data.test, base.tokenizer), progress=True)
        rows.append({"split": "test", "accuracy": ev["accuracy"], "step": res.best_step})
    path = prompted.save(out / "prompt", **task.to_extra(), results=rows)
    plot_curves(res.history, out / "curves.png", title=f"{prompted.method} on {data.name}")
    print(table(rows, ["split", "accuracy", "step"]))
    size = sum(f.stat().st_size for f in path.iterdir())
    print(f"saved {path} ({size / 1024:.1f} KiB); curves: {out / 'curves.png'}; metrics: {out / 'metrics.jsonl'}")
    return 0
