"""softprompt inspect: a prompt's manifest, size, and per soft token its norm and nearest vocabulary tokens."""

from __future__ import annotations

import argparse

HELP = "show a prompt's manifest, size, and the nearest vocabulary tokens of each soft token"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from softprompt.cli.common import add_base_options

    add_base_options(p)
    p.add_argument("prompt", help="saved prompt directory")
    p.add_argument("--top", type=int, default=5, help="nearest tokens per soft token")
    p.add_argument("--no-base", action="store_true", help="only the manifest (no model load, no nearest tokens)")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from softprompt.artifacts.io import read_dir
    from softprompt.cli.common import load_base_from

    art = read_dir(args.prompt)
    m = art.manifest
    size = sum(f.stat().st_size for f in Path(args.prompt).iterdir())
    print(f"prompt {args.prompt}: method {m['method']}, {m['num_parameters']:,} parameters, "
          f"{size / 1024:.1f} KiB on disk")
    print(f"base: {m['base'].get('model_type')} hidden={m['base'].get('hidden_size')} "
          f"layers={m['base'].get('num_layers')} vocab={m['base'].get('vocab_size')}")
    print("config: " + json.dumps(m["config"]))
    for k, v in m["tensors"].items():
        print(f"tensor {k}: shape {v['shape']} {v['dtype']}")
    extra = {k: v for k, v in m.get("extra", {}).items()}
    if extra:
        print("extra: " + json.dumps(extra, indent=1)[:2000])
    if args.no_base:
        return 0

    base = load_base_from(args)
    for name in ("embeds", "slots", "states"):
        if name in art.tensors:
            vecs = art.tensors[name]
            vecs = vecs[0] if name == "states" else vecs  # deep prompt: the layer-0 vectors live in embedding space
            for i, row in enumerate(nearest_tokens(base, vecs, args.top)):
                print(f"  soft {i:3d}  norm {row['norm']:.3f}  nearest: {row['nearest']}")
    if "keys" in art.tensors:
        k = art.tensors["keys"]
        print(f"K/V prefix: per-layer key norms {[round(float(x), 2) for x in k.norm(dim=-1).mean(dim=(1, 2))]}")
    return 0


def nearest_tokens(base, vecs, top: int) -> list[dict]:
    """Per soft vector: its norm and the `top` vocabulary tokens with the highest cosine similarity."""
    import torch

    w = base.model.get_input_embeddings()
    table = w(torch.arange(base.facts.vocab_size, device=base.device)).float()  # embedding-output space
    sims = torch.nn.functional.normalize(vecs.float().to(base.device), dim=-1) @ \
        torch.nn.functional.normalize(table, dim=-1).T
    out = []
    for v, s in zip(vecs, sims):
        vals, idx = s.topk(top)
        toks = [f"{base.tokenizer.decode([int(i)])!r}({float(c):.2f})" for c, i in zip(vals, idx)]
        out.append({"norm": float(v.norm()), "nearest": " ".join(toks)})
    return out
