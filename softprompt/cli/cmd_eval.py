"""softprompt eval: accuracy of a saved prompt (its own template and verbalizer) on a data split."""

from __future__ import annotations

import argparse

HELP = "evaluate a saved prompt (or a hand-written template with no prompt) on a data split"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from softprompt.cli.common import add_base_options, add_data_options

    add_base_options(p)
    add_data_options(p)
    p.add_argument("--prompt", default=None, help="saved prompt directory (uses its template and verbalizer)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"],
                   help="split of a built-in data set; a file's own split is 'train' (all of it) unless carved")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N examples (0: all)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="split seed of the built-in data set")


def run(args: argparse.Namespace) -> int:
    import softprompt as sp
    from softprompt.cli.common import parse_fields, parse_labels
    from softprompt.training.run import load_data, make_task
    from softprompt.training.task import Task, evaluate

    base = sp.load_base(args.base, dtype=args.dtype, device=args.device)
    data = load_data(args.data, seed=args.seed, fields=parse_fields(args))
    records = {"train": data.train, "validation": data.validation, "test": data.test}[args.split]
    if not records:
        raise sp.InputError(f"the {args.split} split of {args.data} is empty")
    if args.limit:
        records = records[: args.limit]
    prompt = sp.load_prompt(args.prompt, base) if args.prompt else None
    if prompt is not None and args.template is None:
        task = Task.from_extra(prompt.extra)
    else:
        task = make_task(data.name, args.template, parse_labels(args.labels), data_labels=data.labels)
    ev = evaluate(base, prompt, task, task.encode_all(records, base.tokenizer), args.batch_size, progress=True)
    print(f"{args.split}: accuracy {ev['accuracy']:.4f} on {ev['n']} examples (loss {ev['loss']:.4f})")
    return 0
