"""softprompt demo: the README's main job on the embedded default (smollm2 + rotten_tomatoes).

Trains a 20-token prompt, evaluates it on the held-out test split against the best hand-written prompt with
no soft tokens, saves the artifact and prints the table. About 6-9 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse

HELP = "train a 20-token prompt on rotten_tomatoes with smollm2 and compare with hand-written prompts"
INIT_TEXT = "Classify the sentiment of this movie review as positive or negative."
DEMO_TRAIN = {"steps": 250, "batch_size": 8, "eval_every": 50, "eval_examples": 300, "checkpoint_every": 50}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from softprompt.cli.common import (
        add_base_options,
        add_limit,
        add_num_virtual_tokens,
        add_progress,
        add_seed,
        method_configs,
    )
    from softprompt.cli.options import add_config_options
    from softprompt.training.config import TrainConfig

    add_base_options(p)
    p.set_defaults(dtype="bf16")  # the frozen model in bf16: about 2x faster on CPU; soft prompts stay fp32
    p.add_argument("--data", default="rotten_tomatoes", choices=["rotten_tomatoes", "bbc_news", "drug_reviews"],
                   help="built-in data set")
    methods = sorted(m for m, c in method_configs().items() if "num_virtual_tokens" in c.__dataclass_fields__)
    p.add_argument("--method", default="prompt_tuning", choices=methods, help="method to train")
    add_config_options(p, TrainConfig, "train", only=("steps",), defaults=DEMO_TRAIN)
    add_num_virtual_tokens(p)
    add_limit(p)
    add_seed(p)
    p.add_argument("--out", default="runs/demo", help="run directory; the prompt is saved in OUT/prompt")
    add_progress(p)


def try_it(path, template: str, text: str = "a gem of a film") -> str:
    """The command line that continues the demo's template for a new review with the saved prompt."""
    from softprompt.cli.options import shell_quote

    prefix = template.split("{label}")[0].replace("{text}", text).rstrip()
    return f"softprompt generate --prompt {path} {shell_quote(prefix)} --max-new-tokens 2"


def prepare(args: argparse.Namespace):
    """(method config, train config, data, task, test records), all validated before the model loads."""
    from softprompt.cli.common import method_config
    from softprompt.cli.options import build
    from softprompt.training.config import TrainConfig
    from softprompt.training.run import load_data, make_task

    init = {"init": "text", "init_text": INIT_TEXT} if args.data == "rotten_tomatoes" else {}
    config = method_config(args, seed=args.seed, **init)
    cfg = build(TrainConfig, args, "train", **DEMO_TRAIN, seed=args.seed)
    data = load_data(args.data, seed=args.seed)
    task = make_task(data.name, None, None)
    return config, cfg, data, task, data.test[: args.limit or None]


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import torch

    import softprompt as sp
    from softprompt.cli.common import load_base_from
    from softprompt.templates import Template
    from softprompt.training.metrics import plot_curves, table
    from softprompt.training.presets import PRESETS
    from softprompt.training.run import best_handwritten, fit
    from softprompt.training.task import Task, evaluate

    t0 = time.time()
    progress = not args.no_progress
    config, cfg, data, task, test = prepare(args)
    torch.manual_seed(args.seed)
    print(f"loading {args.base} and {args.data} ...", flush=True)
    base = load_base_from(args)
    preset = PRESETS[args.data]
    print(f"{len(data.train)} train / {len(data.validation)} validation / {len(test)} test examples", flush=True)

    best_t, scores = best_handwritten(base, data, task, preset.handwritten, n_val=150)
    hand = Task(Template.parse(best_t), task.verbalizer, task.max_length)
    hand_acc = evaluate(base, None, hand, hand.encode_all(test, base.tokenizer), progress=progress)["accuracy"]
    print(f"best hand-written prompt (validation {scores[best_t]:.3f}): {best_t!r}", flush=True)

    prompted = sp.attach(base, config)
    out = Path(args.out)
    res = fit(prompted, task, data, cfg, out_dir=out, resume=False, progress=progress)
    tuned = evaluate(base, prompted, task, task.encode_all(test, base.tokenizer), progress=progress)["accuracy"]
    rows = [
        {"prompt": f"hand-written (best of {len(preset.handwritten)}, no training)", "soft tokens": 0,
         "test accuracy": hand_acc},
        {"prompt": f"{args.method} ({res.steps_done} steps)", "soft tokens": config.num_virtual_tokens,
         "test accuracy": tuned},
    ]
    path = prompted.save(out / "prompt", **task.to_extra(), results=rows)
    plot_curves(res.history, out / "curves.png", title=f"{args.method} on {args.data} ({args.base})")
    size = sum(f.stat().st_size for f in path.iterdir())
    print()
    print(table(rows, ["prompt", "soft tokens", "test accuracy"]))
    print(f"\ntest examples: {len(test)}; trainable parameters: {prompted.num_trainable():,}; "
          f"artifact: {path} ({size / 1024:.1f} KiB); curves: {out / 'curves.png'}; "
          f"total time {time.time() - t0:.0f} s")
    epochs = res.steps_done * cfg.batch_size / max(len(data.train), 1)
    print(f"a short recipe, to fit in minutes: {res.steps_done} steps = {epochs:.2f} epoch, validation on "
          f"{cfg.eval_examples or 'all'} examples (the README's results table trains 1 epoch, whole validation split)")
    print(f"try it:  {try_it(path, preset.template)}")
    return 0
