"""softprompt import: turn a Hugging Face PEFT prompt-learning adapter into a softprompt prompt directory."""

from __future__ import annotations

import argparse

HELP = "import a PEFT prompt-tuning / P-tuning / prefix-tuning adapter (safetensors only) as a saved prompt"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from softprompt.cli.common import add_base_options

    add_base_options(p)
    p.add_argument("--peft", required=True, metavar="DIR",
                   help="PEFT adapter directory (adapter_config.json + adapter_model.safetensors)")
    p.add_argument("--out", required=True, help="directory to save the softprompt prompt to")


def run(args: argparse.Namespace) -> int:
    from softprompt.cli.common import load_base_from
    from softprompt.interop import import_peft

    base = load_base_from(args)
    prompt = import_peft(args.peft, base)
    out = prompt.save(args.out)
    print(f"imported {prompt.extra['imported_from']['peft_type']} adapter as a {prompt.method} prompt "
          f"({prompt.config.num_virtual_tokens} virtual tokens) in {out}")
    return 0
