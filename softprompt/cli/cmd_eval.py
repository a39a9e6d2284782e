"""softprompt eval: accuracy of a saved prompt (its own template and verbalizer) on a data split."""

from __future__ import annotations

import argparse

HELP = "evaluate a saved prompt (or a hand-written template with no prompt) on a data split"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from softprompt.cli.common import add_base_options, add_data_options, add_limit, add_progress, add_seed

    add_base_options(p)
    add_data_options(p)
    p.add_argument("--prompt", default=None,
                   help="saved prompt directory, whose template and verbalizer are used (default: no prompt, "
                        "the --template as written)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"],
                   help="split to score; a file is split by the same stratified, seeded rule as in train")
    add_limit(p, what="chosen")
    p.add_argument("--batch-size", type=int, default=32, help="examples scored per forward pass")
    add_seed(p, help="seed of the train/validation/test split (use the one the prompt was trained with)")
    add_progress(p)


def run(args: argparse.Namespace) -> int:
    import softprompt as sp
    from softprompt.cli.common import load_base_from, parse_fields, parse_labels
    from softprompt.training.run import load_data, make_task
    from softprompt.training.task import Task, evaluate

    data = load_data(args.data, seed=args.seed, fields=parse_fields(args))
    records = {"train": data.train, "validation": data.validation, "test": data.test}[args.split]
    if not records:
        raise sp.InputError(f"the {args.split} split of {args.data} is empty ({len(data.train)} train / "
                            f"{len(data.validation)} validation / {len(data.test)} test records); pass --split train "
                            "or a larger file")
    if args.limit:
        records = records[: args.limit]
    task = None
    if args.prompt is None or args.template is not None:  # checked before the model loads
        task = make_task(data.name, args.template, parse_labels(args.labels), data_labels=data.labels)
    base = load_base_from(args)
    prompt = sp.load_prompt(args.prompt, base) if args.prompt else None
    if task is None:
        task = Task.from_extra(prompt.extra)
    ev = evaluate(base, prompt, task, task.encode_all(records, base.tokenizer), args.batch_size,
                  progress=not args.no_progress)
    print(f"{args.split}: accuracy {ev['accuracy']:.4f} on {ev['n']} examples (loss {ev['loss']:.4f})")
    return 0
