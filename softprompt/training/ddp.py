"""Data-parallel prompt training over several processes: DistributedDataParallel over the prompt module.

    torchrun --nproc-per-node 2 -m softprompt.training.ddp --data rotten_tomatoes --method prompt_tuning \\
        --steps 300 --batch-size 16 --out runs/ddp

Every rank holds the frozen base and a replica of the prompt. Each global batch (`--batch-size` examples,
the same stream of batches the single-process recipe draws) is split into one contiguous shard per rank;
each rank runs forward and backward on its shard and DDP all-reduces (averages) the prompt's gradients, so
every rank takes the same AdamW step. Backend: gloo on CPU, nccl on GPU (one device per rank, LOCAL_RANK).

Exactness: rank r's loss is the mean over its shard's c_r units (examples, or answer tokens for generation),
scaled by W * c_r / N with N = sum of c_r over ranks. Averaging the W gradients then gives the gradient of
the global mean loss, so W processes compute what one process computes on the whole batch, for any shard
sizes (tests/test_ddp.py checks the prompt after training against `tune.train`).

Compared with `tune.train` this recipe has no periodic evaluation, early stopping or resumable
checkpoints: it trains `steps` steps, then (rank 0) saves the prompt and reports validation accuracy,
evaluated in shards across the ranks.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from softprompt.errors import InputError, TrainingError
from softprompt.training.task import Example, Task
from softprompt.training.tune import DEFAULT_LR, BatchStream, TrainConfig, lr_at

log = logging.getLogger(__name__)


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard(batch: Sequence[Any], rank: int, world_size: int) -> list[Any]:
    """Rank `rank`'s contiguous part of `batch`; part sizes differ by at most one (the first parts are larger)."""
    n, w = len(batch), world_size
    start = rank * (n // w) + min(rank, n % w)
    return list(batch[start:start + n // w + (1 if rank < n % w else 0)])


class ShardLoss(nn.Module):
    """The module DDP wraps: forward(shard) -> (mean loss over the shard, stats with its unit `count`).

    DDP's gradient hooks only fire for a backward that follows a forward through the wrapper, so the loss
    is computed inside `forward` rather than by calling `task.loss` beside it.
    """

    def __init__(self, prompted: nn.Module, task: Task):
        super().__init__()
        self.prompted = prompted  # the only parameters: the prompt's
        self.task = task

    def forward(self, batch: list[Example]) -> tuple[torch.Tensor, dict]:
        if not batch:  # an empty shard still joins the all-reduce, with zero gradient
            zero = sum(p.sum() for p in self.prompted.parameters()) * 0.0
            return zero, {"correct": 0, "count": 0}
        p = self.prompted
        return self.task.loss(p.base, [p] * len(batch), batch)


@dataclass
class DDPResult:
    steps_done: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if world()[1] > 1:
        dist.all_reduce(t)
    return t.tolist()


def train_ddp(prompted: Any, task: Task, train_examples: Sequence[Example], cfg: TrainConfig = TrainConfig(),
              log_every: int = 0) -> DDPResult:
    """Train `prompted` with every rank of the initialised process group (or alone without one).

    `cfg.batch_size` is the GLOBAL micro-batch; gradient accumulation, warm-up/decay, clipping and AdamW
    follow `tune.train` exactly. Evaluation, patience and checkpoint fields of `cfg` are ignored.
    """
    if not train_examples:
        raise InputError("no training examples")
    rank, size = world()
    params = [p for p in prompted.parameters() if p.requires_grad]
    if not params:
        raise InputError("the prompt has no trainable parameters")
    device = params[0].device
    module = ShardLoss(prompted, task)
    if size > 1:
        ids = [device.index] if device.type == "cuda" else None
        model: nn.Module = nn.parallel.DistributedDataParallel(module, device_ids=ids)  # broadcasts rank 0's prompt
    else:
        model = module
    peak = cfg.lr if cfg.lr is not None else DEFAULT_LR.get(prompted.method, 1e-2)
    opt = torch.optim.AdamW(params, lr=peak, weight_decay=cfg.weight_decay)
    stream = BatchStream(train_examples, cfg.batch_size, cfg.seed)
    history: list[dict[str, Any]] = []
    t0 = time.time()
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg, peak)
        totals = [0.0, 0.0, 0.0]  # loss * count, correct, count (this rank)
        for a in range(cfg.grad_accum):
            part = shard(stream.get(step * cfg.grad_accum + a), rank, size)
            # gradients are all-reduced once per step, on the last micro-batch's backward
            sync = size == 1 or a == cfg.grad_accum - 1
            with contextlib.nullcontext() if sync else model.no_sync():
                loss, stats = model(part)
                c_r = float(stats["count"])
                # every rank learns the global count and whether any rank's loss is non-finite (all stop together)
                n_global, bad = _all_sum([c_r, 0.0 if torch.isfinite(loss) else 1.0], device)
                if bad:
                    raise TrainingError("the loss became non-finite (NaN/inf); lower the learning rate or check "
                                        "the data")
                (loss * (size * c_r / max(n_global, 1.0)) / cfg.grad_accum).backward()
            totals = [totals[0] + float(loss.detach()) * c_r, totals[1] + stats["correct"], totals[2] + c_r]
        if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in params):
            raise TrainingError(f"non-finite gradient at step {step}; lower the learning rate or the clip norm")
        if cfg.clip_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_sum, correct, count = _all_sum(totals, device)
        rec = {"kind": "train", "step": step + 1, "loss": loss_sum / max(count, 1), "acc": correct / max(count, 1),
               "lr": opt.param_groups[0]["lr"]}
        history.append(rec)
        if rank == 0 and log_every and (step + 1) % log_every == 0:
            log.info("step %d: loss %.4f acc %.3f", step + 1, rec["loss"], rec["acc"])
    return DDPResult(cfg.steps, time.time() - t0, history)


@torch.no_grad()
def evaluate_sharded(prompted: Any, task: Task, examples: Sequence[Example], batch_size: int = 32) -> dict[str, float]:
    """Accuracy and loss over `examples`, each rank scoring every W-th example, summed over ranks."""
    rank, size = world()
    mine = list(examples)[rank::size]
    mine.sort(key=lambda e: len(e.ids))
    loss_sum = correct = count = 0.0
    for s in range(0, len(mine), batch_size):
        batch = mine[s:s + batch_size]
        loss, st = task.loss(prompted.base, [prompted] * len(batch), batch)
        loss_sum, correct, count = loss_sum + float(loss) * st["count"], correct + st["correct"], count + st["count"]
    device = next(prompted.parameters()).device
    loss_sum, correct, count = _all_sum([loss_sum, correct, count], device)
    return {"accuracy": correct / max(count, 1), "loss": loss_sum / max(count, 1), "n": len(examples)}


# --- torchrun entry point -------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from softprompt import registry

    p = argparse.ArgumentParser(prog="torchrun --nproc-per-node N -m softprompt.training.ddp",
                                description="Data-parallel prompt training (one process per rank).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--base", default="smollm2", help="embedded base name, Hugging Face directory or .gguf file")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--data", default="rotten_tomatoes", help="built-in data set or a CSV/JSONL/parquet file")
    p.add_argument("--template", default=None, help="template; omitted: the data set's preset")
    p.add_argument("--labels", default=None, help="comma-separated class words; omitted: the preset's")
    p.add_argument("--method", default="prompt_tuning", choices=registry.names())
    p.add_argument("--num-virtual-tokens", type=int, default=20, help="for the methods that have virtual tokens")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8, help="GLOBAL batch, split across the ranks")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate; omitted: the method's default")
    p.add_argument("--warmup-steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-examples", type=int, default=400, help="validation examples scored at the end (0: all)")
    p.add_argument("--backend", default="auto", choices=["auto", "gloo", "nccl"], help="auto: nccl on GPU, else gloo")
    p.add_argument("--out", default="runs/ddp", help="rank 0 saves the prompt in OUT/prompt")
    p.add_argument("--log-every", type=int, default=10)
    return p


def _method_config(args: argparse.Namespace, template: str | None) -> Any:
    import dataclasses

    from softprompt import registry

    cls = registry.get(args.method).config_cls
    names = {f.name for f in dataclasses.fields(cls)}
    kw: dict[str, Any] = {}
    if "num_virtual_tokens" in names:
        kw["num_virtual_tokens"] = args.num_virtual_tokens
    if "template" in names and template:
        kw["template"] = template
    return cls(**kw)


def main(argv: list[str] | None = None) -> int:
    import softprompt as sp
    from softprompt.training.presets import PRESETS
    from softprompt.training.run import load_data, make_task

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cuda = torch.cuda.is_available()
    backend = ("nccl" if cuda else "gloo") if args.backend == "auto" else args.backend
    dist.init_process_group(backend)
    rank, size = world()
    device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if backend == "nccl" else None
    if device:
        torch.cuda.set_device(device)
    try:
        data = load_data(args.data, seed=args.seed)
        template = args.template
        if args.method == "hybrid" and template is None and data.name in PRESETS:
            template = PRESETS[data.name].hybrid_template
        labels = [w.strip() for w in args.labels.split(",")] if args.labels else None
        task = make_task(data.name, template, labels, data_labels=data.labels)
        base = sp.load_base(args.base, dtype=args.dtype, device=device)
        prompted = sp.attach(base, _method_config(args, template))
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
                          warmup_steps=args.warmup_steps, seed=args.seed)
        res = train_ddp(prompted, task, task.encode_all(data.train, base.tokenizer), cfg, log_every=args.log_every)
        val = task.encode_all(data.validation[: args.eval_examples or None], base.tokenizer)
        ev = evaluate_sharded(prompted, task, val) if val else {}
        if rank == 0:
            path = prompted.save(Path(args.out) / "prompt", **task.to_extra(),
                                 results=[{"split": "validation", "accuracy": ev.get("accuracy"), "step": args.steps}],
                                 ddp={"world_size": size, "global_batch": args.batch_size})
            print(f"{size} ranks ({backend}), {res.steps_done} steps in {res.seconds:.1f} s; validation accuracy "
                  f"{ev.get('accuracy', float('nan')):.4f} on {len(val)} examples; saved {path}")
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
