"""softprompt export: write a saved prompt in another tool's format (a PEFT adapter, or vLLM prompt embeddings)."""

from __future__ import annotations

import argparse

HELP = "export a saved prompt as a Hugging Face PEFT adapter or for vLLM's prompt-embeddings input"
FORMATS = ("peft", "vllm-embeds")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from softprompt.cli.common import add_base_options

    add_base_options(p)
    p.add_argument("--prompt", required=True, help="saved prompt directory")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="peft: adapter_config.json + adapter_model.safetensors for PeftModel.from_pretrained; "
                        "vllm-embeds: the soft prompt + request recipe for `vllm serve --enable-prompt-embeds`")
    p.add_argument("--out", required=True, help="output directory (replaced atomically if it exists)")
    p.add_argument("--text", action="append", default=None,
                   help="vllm-embeds only: also write a ready /v1/completions request body for this text "
                        "(repeatable; default: none)")
    p.add_argument("--served-model-name", default=None,
                   help="vllm-embeds only: the model name the vLLM server serves (default: the base's name)")


def run(args: argparse.Namespace) -> int:
    import softprompt as sp
    from softprompt.cli.common import load_base_from
    from softprompt.errors import InputError
    from softprompt.interop import export_peft, export_vllm_embeds

    base = load_base_from(args)
    prompt = sp.load_prompt(args.prompt, base)
    if args.format == "peft":
        if args.text or args.served_model_name:
            raise InputError("--text and --served-model-name apply to --format vllm-embeds only")
        out = export_peft(prompt, args.out)
    else:
        out = export_vllm_embeds(prompt, args.out, texts=args.text, model=args.served_model_name)
    print(f"wrote {args.format} export of {prompt.method} prompt to {out}")
    return 0
