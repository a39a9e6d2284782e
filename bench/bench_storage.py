"""Bytes on disk per task: every softprompt method's saved artifact next to a PEFT LoRA adapter and a full copy.

    python bench/bench_storage.py [--base smollm2] [--tokens 20] [--keep DIR]

Every number is the size of a directory really written: `Prompted.save` (safetensors + manifest.json, the
task's template/verbalizer included as a trained prompt would carry them), PEFT's `save_pretrained` of a LoRA
adapter (r=8, PEFT's default target modules for Llama: q_proj, v_proj) and of the same prompts exported in
PEFT's own format, and `save_pretrained` of the whole model (what fine-tuning the model per task would store).
The prompts are untrained (training does not change their size).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch
from common import dir_bytes, human_bytes, machine, markdown_table, quiet


def configs(n: int) -> dict:
    import softprompt as sp
    from softprompt.training.presets import PRESETS

    knobs = sp.Knobs(num_virtual_tokens=n, soft_template=PRESETS["rotten_tomatoes"].hybrid_template)
    order = ("prompt_tuning", "p_tuning", "prefix_tuning", "deep_prompt", "adapter", "hybrid")
    return {m: sp.build_config(m, knobs) for m in order}  # each method takes the knobs that apply to it


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="smollm2")
    ap.add_argument("--tokens", type=int, default=20, help="virtual tokens of the soft-prompt methods")
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--keep", default=None, help="write the artifacts here instead of a temporary directory")
    args = ap.parse_args()
    quiet()

    import softprompt as sp
    from softprompt.interop.peft_format import PEFT_TYPE, export_peft
    from softprompt.training.run import make_task

    base = sp.load_base(args.base, dtype="fp32")
    task = make_task("rotten_tomatoes", None, None)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-storage-"))
    rows = []
    for method, cfg in configs(args.tokens).items():
        p = sp.attach(base, cfg)
        path = p.save(root / method, **task.to_extra())
        tensors = sum(t.numel() for t in p.prompt.export_tensors().values())
        rows.append({"artifact": f"softprompt {method}", "virtual tokens": cfg.num_virtual_tokens,
                     "stored values": tensors, "bytes": dir_bytes(path)})
        if method in PEFT_TYPE:  # the methods with a PEFT prompt-learning equivalent
            out = export_peft(p, root / f"peft-format-{method}")
            rows.append({"artifact": f"  same, PEFT format ({method})", "virtual tokens": cfg.num_virtual_tokens,
                         "stored values": tensors, "bytes": dir_bytes(out)})

    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(copy.deepcopy(base.model), LoraConfig(task_type="CAUSAL_LM", r=args.lora_r))
    lora.save_pretrained(root / "peft-lora")
    targets = sorted(lora.peft_config["default"].target_modules)
    n_lora = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    rows.append({"artifact": f"PEFT LoRA r={args.lora_r} ({', '.join(targets)})", "virtual tokens": 0,
                 "stored values": n_lora, "bytes": dir_bytes(root / "peft-lora")})
    del lora

    base.model.save_pretrained(root / "full-model")
    n_full = sum(p.numel() for p in base.model.parameters())
    rows.append({"artifact": f"full model copy (save_pretrained, {base.dtype})".replace("torch.", ""),
                 "virtual tokens": 0, "stored values": n_full, "bytes": dir_bytes(root / "full-model")})

    half = copy.deepcopy(base.model).to(torch.bfloat16)
    half.save_pretrained(root / "full-model-bf16")
    del half
    rows.append({"artifact": "full model copy (save_pretrained, bfloat16)", "virtual tokens": 0,
                 "stored values": n_full, "bytes": dir_bytes(root / "full-model-bf16")})

    full = rows[-2]["bytes"]
    for r in rows:
        r["size"] = human_bytes(r["bytes"])
        r["vs full fp32 copy"] = f"1/{full / r['bytes']:.0f}" if r["bytes"] < full else f"{r['bytes'] / full:.2f}"
    print(f"machine: {machine()}")
    print(f"base {args.base}: {n_full:,} parameters; artifacts in {root}\n")
    print(markdown_table(rows, ["artifact", "virtual tokens", "stored values", "bytes", "size", "vs full fp32 copy"]))
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
