"""The README's results table: every method on a built-in data set, several seeds, full test split.

    python bench/bench_results.py --data rotten_tomatoes --seeds 0 1 2 --steps 200 --dtype bf16

Each (method, seed) run is appended to OUT/runs.jsonl as soon as it finishes, and a rerun skips runs already
there, so a long job can be stopped and resumed. The table (mean and standard deviation over seeds of test
accuracy) is printed as Markdown at the end and written to OUT/table.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import softprompt as sp
from softprompt.config import Knobs
from softprompt.templates import Template
from softprompt.training.presets import PRESETS
from softprompt.training.run import best_handwritten, fit, load_data, make_task
from softprompt.training.task import Task, evaluate
from softprompt.training.tune import TrainConfig

METHODS = ["prompt_tuning", "p_tuning", "prefix_tuning", "deep_prompt", "adapter", "hybrid"]
INIT_TEXT = {
    "rotten_tomatoes": "Classify the sentiment of this movie review as positive or negative.",
    "bbc_news": "Classify the topic of this news article: business, entertainment, politics, sport or technology.",
    "drug_reviews": "Rate this drug review as negative, neutral or positive.",
}


def method_config(method: str, data: str, tokens: int, seed: int):
    """Each method takes the knobs that apply to it (adapters: the seed; hybrid: the preset's soft template)."""
    return sp.registry.build_config(method, Knobs(num_virtual_tokens=tokens, init="text", init_text=INIT_TEXT[data],
                                                  seed=seed, soft_template=PRESETS[data].hybrid_template))


def run_one(base, data, name: str, method: str, seed: int, args) -> dict:
    torch.manual_seed(seed)
    prompted = sp.attach(base, method_config(method, name, args.tokens, seed))
    task = make_task(name, prompted.config.task_template(), None)
    cfg = TrainConfig(steps=args.steps, batch_size=8, eval_every=args.eval_every, eval_examples=args.eval_examples,
                      checkpoint_every=0, seed=seed)
    t0 = time.time()
    res = fit(prompted, task, data, cfg, progress=not args.quiet)
    train_s = time.time() - t0
    test = data.test[: args.test_limit or None]
    acc = evaluate(base, prompted, task, task.encode_all(test, base.tokenizer))["accuracy"]
    return {"method": method, "seed": seed, "test_accuracy": acc, "val_best": res.best_metric,
            "best_step": res.best_step, "steps": res.steps_done, "train_seconds": round(train_s, 1),
            "trainable": prompted.num_trainable(), "n_test": len(test)}


def handwritten(base, data, name: str, args) -> dict:
    task = make_task(name, None, None)
    best, scores = best_handwritten(base, data, task, PRESETS[name].handwritten)
    hand = Task(Template.parse(best), task.verbalizer, task.max_length)
    test = data.test[: args.test_limit or None]
    acc = evaluate(base, None, hand, hand.encode_all(test, base.tokenizer))["accuracy"]
    return {"method": "handwritten", "seed": 0, "test_accuracy": acc, "template": best, "val_scores": scores,
            "trainable": 0, "n_test": len(test)}


def table(runs: list[dict], name: str, args) -> str:
    """The README's table: mean ± sd of test accuracy over seeds, per method, in the order of METHODS."""
    tokens = f"{args.tokens} tokens"
    label = {"handwritten": "hand-written prompt, no training", "prompt_tuning": f"prompt tuning ({tokens})",
             "p_tuning": f"P-tuning (MLP encoder, {tokens})", "prefix_tuning": f"prefix tuning, K/V form ({tokens})",
             "deep_prompt": f"deep prompt tuning ({tokens} per layer)", "adapter": "adapters (bottleneck 16)",
             "hybrid": "hybrid hard + soft template (16 + 4 soft tokens)"}
    lines = ["| method | test accuracy, % (mean ± sd over seeds) | seeds run | trainable params |", "|---|---|---|---|"]
    for m in ["handwritten", *METHODS]:
        rs = sorted((r for r in runs if r["method"] == m), key=lambda r: r["seed"])
        if not rs:
            continue
        accs = [100 * r["test_accuracy"] for r in rs]
        if m == "handwritten":
            template = rs[0]["template"].replace("\n", "\\n")
            lines.append(f"| {label[m]} (`{template}`) | {accs[0]:.1f} | — | 0 |")
            continue
        spread = f" ± {statistics.stdev(accs):.1f}" if len(accs) > 1 else ""
        seeds = ", ".join(str(r["seed"]) for r in rs)
        lines.append(f"| {label[m]} | {statistics.mean(accs):.1f}{spread} | {len(rs)} ({seeds}) | "
                     f"{rs[0]['trainable']:,} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="rotten_tomatoes", choices=sorted(PRESETS))
    ap.add_argument("--base", default="smollm2")
    ap.add_argument("--dtype", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-examples", type=int, default=300)
    ap.add_argument("--test-limit", type=int, default=0, help="0: the full test split")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()

    out = Path(args.out) / args.data
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "runs.jsonl"
    runs = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []
    done = {(r["method"], r["seed"]) for r in runs}
    base = sp.load_base(args.base, dtype=args.dtype)
    data = load_data(args.data, seed=0)  # one fixed split; seeds vary initialisation and data order
    # seed-major order: every method gets a first seed before any gets a second
    todo = [("handwritten", 0)] + [(m, s) for s in args.seeds for m in args.methods]
    for method, seed in todo:
        if (method, seed) in done:
            continue
        t0 = time.time()
        r = handwritten(base, data, args.data, args) if method == "handwritten" else \
            run_one(base, data, args.data, method, seed, args)
        r.update(base=args.base, dtype=args.dtype, steps_arg=args.steps, wall_seconds=round(time.time() - t0, 1))
        runs.append(r)
        with open(log_path, "a") as f:
            f.write(json.dumps(r) + "\n")
        print(f"{method} seed {seed}: test accuracy {r['test_accuracy']:.4f} ({r['wall_seconds']} s)", flush=True)
    md = table(runs, args.data, args)
    (out / "table.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
