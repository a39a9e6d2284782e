"""The training recipe: AdamW on the soft parameters only, explicit loop of short functions.

    result = train(prompted, task, train_examples, val_examples, TrainConfig(steps=300), out_dir="runs/x")

Warm-up then linear/cosine decay, gradient accumulation and clipping, evaluation every N steps with early
stopping and best-checkpoint selection, NaN/inf detection, atomic checkpoints and exact resume, metrics to
metrics.jsonl and the `report_to` / `trackers` trackers. The step and the loop are training/loop.py's; this file
composes them: batches, the learning-rate schedule, the progress bar, what is saved where. Under torchrun every
process runs `train` on its shard of each batch (training/distributed.py).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from softprompt.errors import InputError
from softprompt.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from softprompt.training.config import TrainConfig, schedule_problems  # noqa: F401  (re-exported)
from softprompt.training.distributed import Group, evaluate_sharded, group
from softprompt.training.loop import Hooks, LoopState, Micro, optimizer_step, run_loop
from softprompt.training.metrics import MetricsLog, make_trackers
from softprompt.training.task import Example, Task, length_batches

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    best_step: int
    best_metric: float
    steps_done: int
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0
    resumed_at: int = 0  # the checkpoint's step this call went on from (0: it started from scratch)


def lr_at(step: int, cfg: TrainConfig, peak: float) -> float:
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return peak
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    if cfg.schedule == "cosine":
        return peak * 0.5 * (1 + math.cos(math.pi * frac))
    return peak * max(0.0, 1 - frac)


class BatchStream:
    """Deterministic micro-batches: epoch e is ordered by seed+e, so micro-batch m is a pure function of m."""

    def __init__(self, examples: Sequence[Example], batch_size: int, seed: int):
        self.examples, self.batch_size, self.seed = examples, batch_size, seed
        self._epoch, self._batches = -1, []

    def get(self, m: int) -> list[Example]:
        n = math.ceil(len(self.examples) / self.batch_size)
        epoch, i = divmod(m, n)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, length_batches(self.examples, self.batch_size, self.seed + epoch)
        return [self.examples[j] for j in self._batches[i]]


class Average:
    """Exponential moving average of `params` (TrainConfig.ema): after step t, a += (1 - d) * (p - a) with
    d = min(decay, (1 + t) / (10 + t)). `applied()` swaps the average into the parameters for a while (evaluation,
    keeping the best), then restores the trained values the optimizer goes on from."""

    PREFIX = "ema."  # its tensors' keys in a checkpoint's extra tensors

    def __init__(self, params: Sequence[torch.nn.Parameter], decay: float):
        self.params, self.decay = list(params), decay
        self.avg = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        for a, p in zip(self.avg, self.params):
            a.lerp_(p.detach(), 1 - d)

    @torch.no_grad()
    def put(self, values: Sequence[torch.Tensor] | None = None) -> None:
        """Write `values` (default: the average) into the parameters."""
        for p, v in zip(self.params, self.avg if values is None else values):
            p.copy_(v)

    @contextmanager
    def applied(self) -> Iterator[None]:
        trained = [p.detach().clone() for p in self.params]
        self.put()
        try:
            yield
        finally:
            self.put(trained)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"{self.PREFIX}{i}": a for i, a in enumerate(self.avg)}

    def load(self, extra: dict[str, torch.Tensor]) -> None:
        """Restore from a checkpoint's extra tensors (a checkpoint written without the average keeps the start)."""
        for i, a in enumerate(self.avg):
            if f"{self.PREFIX}{i}" in extra:
                a.copy_(extra[f"{self.PREFIX}{i}"])


# ------------------------------------------------------------------------------------------------ the pieces


def _micro_step(prompted: Any, task: Task, batch: list[Example]) -> tuple[torch.Tensor, dict]:
    """One micro-batch's mean loss and its stats (correct, count, tokens)."""
    loss, stats = task.loss(prompted.base, [prompted] * len(batch), batch)
    stats["tokens"] = sum(len(e.ids) + len(e.answer) for e in batch)
    return loss, stats


def _check_inputs(prompted: Any, task: Task, train_examples: Sequence[Example]) -> list[torch.nn.Parameter]:
    if not train_examples:
        raise InputError("no training examples")
    own = prompted.config.task_template()
    if own is not None and own != task.template.source:
        raise InputError(f"this {prompted.method} prompt's soft slots live in its template {own!r}; "
                         f"train it on a task with that template, not {task.template.source!r}")
    params = [p for p in prompted.parameters() if p.requires_grad]
    if not params:
        raise InputError("the prompt has no trainable parameters")
    return params


class _Progress:
    """The progress bar (main process only): one tick per train record, a line per evaluation."""

    def __init__(self, cfg: TrainConfig, start: int, desc: str, enabled: bool):
        from tqdm.auto import tqdm

        self.enabled = enabled
        self.bar = tqdm(total=cfg.steps, initial=start, desc=desc, disable=not enabled, dynamic_ncols=True)

    def write(self, line: str) -> None:
        if self.enabled:
            self.bar.write(line)

    def __call__(self, rec: dict[str, Any]) -> None:
        if rec["kind"] == "train":
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{rec['loss']:.3f}", acc=f"{rec['acc']:.2f}", tok_s=f"{rec['tokens_per_s']:.0f}")
        elif rec["kind"] == "eval":
            self.write(f"step {rec['step']}: validation accuracy {rec['accuracy']:.4f} loss {rec['loss']:.4f}")


def _step_fn(prompted: Any, task: Task, stream: BatchStream, opt: torch.optim.Optimizer,
             params: list[torch.nn.Parameter], cfg: TrainConfig, peak: float, grp: Group,
             avg: Average | None) -> Callable[[int], dict]:
    """take_step(i) for the loop: step i's micro-batches (this process's shards), one optimizer step, its record."""

    def micro(batch: list[Example]) -> Micro:
        return Micro(lambda: _micro_step(prompted, task, batch), task.units(batch))

    def take_step(step: int) -> dict[str, Any]:
        tic = time.time()
        micros = [micro(grp.shard(stream.get(step * cfg.grad_accum + a))) for a in range(cfg.grad_accum)]
        lr = lr_at(step, cfg, peak)
        st = optimizer_step(opt, params, micros, lr=lr, clip_norm=cfg.clip_norm, step=step, group=grp,
                            stats=("correct", "count", "tokens"))
        if avg is not None:
            avg.update(step)
        return {"loss": st["loss"], "acc": st["correct"] / max(st["count"], 1), "lr": lr,
                "tokens_per_s": st["tokens"] / max(time.time() - tic, 1e-9)}

    return take_step


def _resume(ckpt_root: Path | None, prompted: Any, opt: torch.optim.Optimizer,
            avg: Average | None) -> tuple[LoopState, dict | None]:
    if ckpt_root is None or not (ck := latest_checkpoint(ckpt_root)):
        return LoopState(), None
    scalars, extra = load_checkpoint(ck, prompted.prompt, opt)
    if avg is not None:
        avg.load(extra)
    best = {k: v for k, v in extra.items() if not k.startswith(Average.PREFIX)}
    log.info("resumed from %s at step %d", ck, scalars["step"])
    return LoopState.from_scalars(scalars), best or None


# ------------------------------------------------------------------------------------------------ the recipe


def train(prompted: Any, task: Task, train_examples: Sequence[Example], val_examples: Sequence[Example],
          cfg: TrainConfig = TrainConfig(), out_dir: str | Path | None = None, resume: bool = True,
          progress: bool = True, trackers: Sequence[Callable[[dict[str, Any]], None]] = ()) -> TrainResult:
    """Train `prompted`'s parameters (only those) on `task`. With `out_dir`, checkpoints, metrics.jsonl (and the
    `cfg.report_to` trackers) go there and a killed run resumes from its last checkpoint exactly as if never
    stopped. `trackers`: more callables receiving every metrics record. At the end the best evaluated parameters
    (with `cfg.ema`, the best evaluated average; without validation, the last average) are loaded back into
    `prompted`. Under torchrun / accelerate launch every process runs this same call on its shard of each batch
    (training/distributed.py); only the first process writes files."""
    params = _check_inputs(prompted, task, train_examples)
    if cfg.epochs:
        cfg = dataclasses.replace(cfg, steps=cfg.steps_for(len(train_examples)))
    if out_dir is None and cfg.report_to != "none":
        raise InputError(f"report_to={cfg.report_to!r} writes under the run directory: pass out_dir (--out)")
    grp = group()
    grp.broadcast(params)
    peak = cfg.lr if cfg.lr is not None else prompted.config.default_lr
    opt = torch.optim.AdamW(params, lr=peak, weight_decay=cfg.weight_decay)
    out = Path(out_dir) if out_dir else None
    writes = out is not None and grp.is_main
    avg = Average(params, cfg.ema) if cfg.ema else None
    state, best = _resume(out / "checkpoints" if out and resume else None, prompted, opt, avg)
    resumed_at = state.step
    metrics = MetricsLog(out / "metrics.jsonl" if writes else None, state.history,
                         [*make_trackers(cfg.report_to, out if writes else None, state.step), *trackers]
                         if grp.is_main else [])
    state.history = metrics.records
    bar = _Progress(cfg, state.step, f"train {prompted.method}", progress and grp.is_main)
    val = list(val_examples)[: cfg.eval_examples or None]
    kept = {"best": best}

    def log_record(rec: dict[str, Any]) -> None:
        metrics.log(**rec)
        bar(rec)

    def averaged() -> AbstractContextManager:  # with cfg.ema, the average is what is evaluated and kept
        return avg.applied() if avg else nullcontext()

    def evaluate() -> dict[str, float]:
        with averaged():
            return evaluate_sharded(prompted.base, prompted, task, val, grp)

    def on_best(step: int, ev: dict[str, float]) -> None:
        with averaged():
            kept["best"] = copy.deepcopy(prompted.prompt.state_dict())
            if writes:
                prompted.save(out / "best", **task.to_extra(), best_step=step, val_accuracy=ev["accuracy"])

    def checkpoint(st: LoopState) -> None:
        if writes:
            save_checkpoint(out / "checkpoints", st.step, prompted.prompt, opt, st.to_scalars(asdict(cfg)),
                            extra={**(kept["best"] or {}), **(avg.tensors() if avg else {})})

    hooks = Hooks(log_record, evaluate if val else None, on_best, checkpoint if out else None)
    t0 = time.time()
    stream = BatchStream(train_examples, cfg.batch_size, cfg.seed)
    try:
        run_loop(cfg, state, _step_fn(prompted, task, stream, opt, params, cfg, peak, grp, avg), hooks)
        if state.stopped_early:
            bar.write(f"early stop at step {state.step}: no improvement in {cfg.patience} evaluations")
    finally:
        bar.bar.close()
        metrics.close()
    if kept["best"] is not None:
        prompted.prompt.load_state_dict(kept["best"])
    elif avg is not None:  # nothing evaluated: the run's result is its last average
        avg.put()
    return TrainResult(best_step=state.best_step, best_metric=state.best_metric, steps_done=state.step,
                       history=metrics.records, stopped_early=state.stopped_early, seconds=time.time() - t0,
                       resumed_at=resumed_at)
