"""softprompt demo: the README's main job on the embedded default (smollm2 + rotten_tomatoes).

Trains a 20-token prompt, evaluates it on the held-out test split against the best hand-written prompt with
no soft tokens, saves the artifact and prints the table. About 6-9 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse

HELP = "train a 20-token prompt on rotten_tomatoes with smollm2 and compare with hand-written prompts"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from softprompt.cli.common import add_base_options

    add_base_options(p)
    p.set_defaults(dtype="bf16")  # the frozen model in bf16: about 2x faster on CPU; soft prompts stay fp32
    p.add_argument("--data", default="rotten_tomatoes", choices=["rotten_tomatoes", "bbc_news", "drug_reviews"])
    p.add_argument("--method", default="prompt_tuning", help="method to train")
    p.add_argument("--steps", type=int, default=250, help="training steps (batch 8)")
    p.add_argument("--tokens", type=int, default=20, help="virtual tokens")
    p.add_argument("--test-limit", type=int, default=0, help="evaluate on the first N test examples (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/demo", help="run directory; the prompt is saved in OUT/prompt")


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import torch

    import softprompt as sp
    from softprompt.templates import Template
    from softprompt.training.metrics import plot_curves, table
    from softprompt.training.presets import PRESETS
    from softprompt.training.run import best_handwritten, fit, load_data, make_task
    from softprompt.training.task import Task, evaluate
    from softprompt.training.tune import TrainConfig

    t0 = time.time()
    torch.manual_seed(args.seed)
    print(f"loading {args.base} and {args.data} ...", flush=True)
    base = sp.load_base(args.base, dtype=args.dtype, device=args.device)
    data = load_data(args.data, seed=args.seed)
    test = data.test[: args.test_limit or None]
    preset = PRESETS[args.data]
    task = make_task(data.name, None, None)
    print(f"{len(data.train)} train / {len(data.validation)} validation / {len(test)} test examples", flush=True)

    best_t, scores = best_handwritten(base, data, task, preset.handwritten, n_val=150)
    hand = Task(Template.parse(best_t), task.verbalizer, task.max_length)
    hand_acc = evaluate(base, None, hand, hand.encode_all(test, base.tokenizer), progress=True)["accuracy"]
    print(f"best hand-written prompt (validation {scores[best_t]:.3f}): {best_t!r}", flush=True)

    init = {"init": "text", "init_text": "Classify the sentiment of this movie review as positive or negative."} \
        if args.data == "rotten_tomatoes" else {}
    config = sp.build_config(args.method, sp.Knobs(num_virtual_tokens=args.tokens, seed=args.seed,
                                                   soft_template=preset.hybrid_template, **init))
    if config.task_template():  # a hybrid prompt trains and is tested on its own template
        task = make_task(data.name, config.task_template(), None)
    prompted = sp.attach(base, config)
    cfg = TrainConfig(steps=args.steps, batch_size=8, eval_every=50, eval_examples=300, checkpoint_every=50,
                      seed=args.seed)
    out = Path(args.out)
    res = fit(prompted, task, data, cfg, out_dir=out, resume=False)
    tuned = evaluate(base, prompted, task, task.encode_all(test, base.tokenizer), progress=True)["accuracy"]
    rows = [
        {"prompt": f"hand-written (best of {len(preset.handwritten)}, no training)", "soft tokens": 0,
         "test accuracy": hand_acc},
        {"prompt": f"{args.method} ({res.steps_done} steps)", "soft tokens": args.tokens, "test accuracy": tuned},
    ]
    path = prompted.save(out / "prompt", **task.to_extra(), results=rows)
    plot_curves(res.history, out / "curves.png", title=f"{args.method} on {args.data} ({args.base})")
    size = sum(f.stat().st_size for f in path.iterdir())
    print()
    print(table(rows, ["prompt", "soft tokens", "test accuracy"]))
    print(f"\ntest examples: {len(test)}; trainable parameters: {prompted.num_trainable():,}; "
          f"artifact: {path} ({size / 1024:.1f} KiB); curves: {out / 'curves.png'}; "
          f"total time {time.time() - t0:.0f} s")
    print(f"try it:  softprompt generate --prompt {path} 'Review: a gem of a film\\nSentiment:' --max-new-tokens 2")
    return 0
