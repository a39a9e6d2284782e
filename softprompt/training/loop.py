"""The recipe core: ONE optimizer step and one loop of short pieces, shared by every recipe.

    stats = optimizer_step(opt, params, [Micro(loss_fn, units)], lr=1e-2, clip_norm=1.0, step=0)
    state = run_loop(cfg, state, take_step, Hooks(log=..., evaluate=..., on_best=..., checkpoint=...))

`optimizer_step` is the only place in softprompt that steps an optimizer: prompt training (tune.py), context
distillation (distill.py) and data-parallel training (the same call with a process `Group`) all use it. `run_loop`
knows nothing of files: logging, evaluation, keeping the best prompt and checkpointing are callables passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from softprompt.errors import TrainingError
from softprompt.training.distributed import Group

LOCAL = Group()


@dataclass
class Micro:
    """One micro-batch of this process: a closure computing its mean loss and stats, and how many units
    (examples, answer tokens) the mean is over (0: an empty shard, nothing to compute)."""

    loss: Callable[[], tuple[torch.Tensor, dict[str, float]]]
    units: int


def optimizer_step(opt: torch.optim.Optimizer, params: Sequence[torch.nn.Parameter], micros: Sequence[Micro], *,
                   lr: float, clip_norm: float, step: int, group: Group = LOCAL,
                   stats: Sequence[str] = ()) -> dict[str, float]:
    """Forward+backward every micro-batch, sum gradients over processes, check, clip, take one AdamW step.

    Micro-batch a's loss is weighted by this process's share of its units (c_r / N_a) and by 1 / len(micros),
    so the summed gradient is that of the mean over micro-batches of each global micro-batch's mean loss (alone:
    the weight is exactly 1 / len(micros)). Returns that mean loss and the named `stats` summed over micro-batches
    and processes. Every process raises together on a non-finite loss or gradient.
    """
    for g in opt.param_groups:
        g["lr"] = lr
    totals = group.sum([float(m.units) for m in micros])  # N_a: units of micro-batch a over all processes
    loss_sum, bad, sums = 0.0, 0.0, dict.fromkeys(stats, 0.0)
    for m, n in zip(micros, totals):
        if m.units == 0:
            continue
        loss, st = m.loss()
        if not torch.isfinite(loss):
            bad = 1.0
            break
        w = m.units / max(n, 1.0)  # this process's share of the global micro-batch
        (loss * (w / len(micros))).backward()
        loss_sum += float(loss.detach()) * w
        for k in sums:
            sums[k] += st[k]
    reduced = group.sum([loss_sum, bad, *sums.values()])
    if reduced[1]:
        opt.zero_grad(set_to_none=True)
        raise TrainingError(f"the loss became non-finite (NaN/inf) at step {step + 1}; lower the learning rate "
                            "or check the data")
    group.sum_grads(params)
    if any(p.grad is not None and not torch.isfinite(p.grad).all() for p in params):
        opt.zero_grad(set_to_none=True)
        raise TrainingError(f"non-finite gradient at step {step + 1}; lower the learning rate or the clip norm")
    if clip_norm:
        torch.nn.utils.clip_grad_norm_(params, clip_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return {"loss": reduced[0] / len(micros), **dict(zip(sums, reduced[2:]))}


@dataclass
class LoopState:
    """Everything the loop needs to continue exactly where it stopped (saved in every checkpoint)."""

    step: int = 0
    best_metric: float = -math.inf
    best_step: int = -1
    bad_evals: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False

    def to_scalars(self, config: dict[str, Any]) -> dict[str, Any]:
        return {"step": self.step, "best_metric": self.best_metric, "best_step": self.best_step,
                "bad_evals": self.bad_evals, "history": self.history, "config": config}

    @classmethod
    def from_scalars(cls, d: dict[str, Any]) -> LoopState:
        return cls(d["step"], d["best_metric"], d["best_step"], d["bad_evals"], list(d["history"]))


@dataclass
class Hooks:
    """What the loop calls. `log` receives every record (kind 'train' or 'eval'); `evaluate` returns validation
    metrics with an 'accuracy'; `on_best(step, metrics)` sees each new best; `checkpoint(state)` saves."""

    log: Callable[[dict[str, Any]], None]
    evaluate: Callable[[], dict[str, float]] | None = None
    on_best: Callable[[int, dict[str, float]], None] | None = None
    checkpoint: Callable[[LoopState], None] | None = None


def _due(every: int, step: int, last: int) -> bool:
    return bool(every and step % every == 0) or step == last


def _evaluate(cfg: Any, state: LoopState, hooks: Hooks) -> None:
    """One evaluation, best-so-far bookkeeping and the early-stopping decision."""
    ev = hooks.evaluate()
    hooks.log({"kind": "eval", "step": state.step, **ev})
    if ev["accuracy"] > state.best_metric:
        state.best_metric, state.best_step, state.bad_evals = ev["accuracy"], state.step, 0
        if hooks.on_best:
            hooks.on_best(state.step, ev)
        return
    state.bad_evals += 1
    state.stopped_early = bool(cfg.patience and state.bad_evals >= cfg.patience)


def run_loop(cfg: Any, state: LoopState, take_step: Callable[[int], dict[str, Any]], hooks: Hooks) -> LoopState:
    """Steps `state.step` .. `cfg.steps - 1` (take_step(i) returns step i's train record), evaluating every
    `cfg.eval_every` and at the end, stopping after `cfg.patience` evaluations without improvement, and
    checkpointing every `cfg.checkpoint_every`, at the end and at an early stop."""
    while state.step < cfg.steps:
        rec = take_step(state.step)
        state.step += 1
        hooks.log({"kind": "train", "step": state.step, **rec})
        if hooks.evaluate and _due(cfg.eval_every, state.step, cfg.steps):
            _evaluate(cfg, state, hooks)
        if hooks.checkpoint and (_due(cfg.checkpoint_every, state.step, cfg.steps) or state.stopped_early):
            hooks.checkpoint(state)
        if state.stopped_early:
            break
    return state
