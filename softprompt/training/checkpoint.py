"""Training checkpoints: module + optimizer tensors in safetensors, scalars in JSON, written atomically.

Each checkpoint is a new directory `step-NNNNNNN` made by one rename of a fsynced temp dir; then the file
`LATEST` is replaced atomically to point at it, and older ones are pruned. A run killed at any moment
leaves `LATEST` naming a complete checkpoint. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save

from softprompt.files import write_files

STATE = "state.json"
TENSORS = "state.safetensors"


def _save_dir(path: Path, module: torch.nn.Module, opt: torch.optim.Optimizer, scalars: dict[str, Any],
              extra: dict[str, torch.Tensor]) -> None:
    tensors = {f"module.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    tensors.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in extra.items()})
    sd = opt.state_dict()
    steps = {}
    for idx, st in sd["state"].items():
        for name, val in st.items():
            if name == "step":
                steps[str(idx)] = float(val)
            else:
                tensors[f"opt.{idx}.{name}"] = val.detach().cpu().contiguous()
    meta = {"scalars": scalars, "opt_steps": steps, "param_groups": sd["param_groups"]}
    write_files(path, {TENSORS: save(tensors), STATE: json.dumps(meta, indent=1).encode()})


def load_checkpoint(path: Path, module: torch.nn.Module,
                    opt: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore module and optimizer; returns (scalars, extra tensors)."""
    path = Path(path)
    meta = json.loads((path / STATE).read_text())
    tensors = load((path / TENSORS).read_bytes())
    module.load_state_dict({k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for idx, step in meta["opt_steps"].items():
        state.setdefault(int(idx), {})["step"] = torch.tensor(step)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    extra = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    return meta["scalars"], extra


LATEST = "LATEST"


def save_checkpoint(ckpt_root: Path, step: int, module: torch.nn.Module, opt: torch.optim.Optimizer,
                    scalars: dict[str, Any], extra: dict[str, torch.Tensor] | None = None, keep: int = 2) -> Path:
    ckpt_root = Path(ckpt_root)
    name = f"step-{step:07d}"
    _save_dir(ckpt_root / name, module, opt, scalars, extra or {})
    tmp = ckpt_root / f".{LATEST}.tmp"
    tmp.write_text(name)
    os.replace(tmp, ckpt_root / LATEST)
    for old in sorted(p for p in ckpt_root.glob("step-*") if p.name != name)[:-keep + 1 or None]:
        shutil.rmtree(old, ignore_errors=True)
    return ckpt_root / name


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    f = Path(ckpt_root) / LATEST
    if not f.exists():
        return None
    path = Path(ckpt_root) / f.read_text().strip()
    return path if (path / STATE).exists() else None
