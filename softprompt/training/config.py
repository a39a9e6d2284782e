"""The training recipes' options: frozen dataclasses with no torch in sight, so the CLI builds its flags from
them (help from the field docstrings, choices from the `Literal` types) without loading a model library.
`TrainConfig` drives training/tune.py, `DistillConfig` training/distill.py (both re-export them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from softprompt.config import ConfigBase

Schedule = Literal["linear", "cosine", "constant"]
ReportTo = Literal["none", "tensorboard"]


@dataclass(frozen=True)
class TrainConfig(ConfigBase):
    """How to train (the method's own options live in its config)."""

    steps: int = 300
    """Optimizer steps (ignored when `epochs` is set)."""
    epochs: float = 0.0
    """Passes over the training data; when > 0 it sets the number of steps (a fraction is allowed: 0.5)."""
    batch_size: int = 8
    """Examples per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    lr: float | None = None
    """Peak learning rate (default: the method's, e.g. 1e-2 for prompt tuning, 2e-3 for adapters)."""
    warmup_steps: int = 20
    """Linear warm-up steps."""
    schedule: Schedule = "linear"
    """Decay after warm-up: linear, cosine or constant."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    clip_norm: float = 1.0
    """Gradient clipping max norm (0: off)."""
    ema: float = 0.0
    """Exponential moving average of the trained parameters, e.g. 0.999 (0: off). With it on, evaluation, the
    best checkpoint and the saved prompt are the average's. Step t uses the decay min(ema, (1+t)/(10+t)), so the
    first steps do not keep the initialisation."""
    eval_every: int = 50
    """Evaluate on the validation set every N steps (0: only at the end)."""
    eval_examples: int = 0
    """Validation examples used for each evaluation (0: the whole validation split)."""
    patience: int = 0
    """Early stopping: stop after N evaluations without improvement (0: off)."""
    checkpoint_every: int = 50
    """Write a resumable checkpoint every N steps (0: off)."""
    seed: int = 0
    """Seed of the data order."""
    report_to: ReportTo = "none"
    """Where metrics go besides OUT/metrics.jsonl: none, or tensorboard (OUT/tensorboard; the `track` extra)."""

    def problems(self) -> list[str]:
        out = []
        for name in ("steps", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                out.append(f"{name}={getattr(self, name)}: must be >= 1")
        if self.epochs < 0:
            out.append(f"epochs={self.epochs}: must be >= 0 (0: use steps)")
        for name in ("warmup_steps", "eval_every", "eval_examples", "patience", "checkpoint_every"):
            if getattr(self, name) < 0:
                out.append(f"{name}={getattr(self, name)}: must be >= 0")
        out += schedule_problems(self)
        if self.clip_norm < 0:
            out.append(f"clip_norm={self.clip_norm}: must be >= 0 (0 turns clipping off)")
        if not 0 <= self.ema < 1:
            out.append(f"ema={self.ema}: must be in [0, 1) (0 turns the average off)")
        return out

    def steps_for(self, n_examples: int) -> int:
        """Optimizer steps of this recipe on `n_examples` training examples (`epochs` wins over `steps`; under
        torchrun a step's global batch is still batch_size * grad_accum, sharded)."""
        if not self.epochs:
            return self.steps
        return max(1, math.ceil(self.epochs * n_examples / (self.batch_size * self.grad_accum)))


def schedule_problems(cfg: Any) -> list[str]:
    """Problems with the learning-rate fields that lr_at reads, shared by TrainConfig and DistillConfig."""
    out = []
    if cfg.lr is not None and not (0 < cfg.lr < 10):
        out.append(f"lr={cfg.lr}: must be in (0, 10)")
    if cfg.schedule not in ("linear", "cosine", "constant"):
        out.append(f"schedule={cfg.schedule!r}: must be linear, cosine or constant")
    return out


@dataclass(frozen=True)
class DistillConfig(ConfigBase):
    """How to compress a context (the CLI's options come from these docstrings)."""

    tokens: int = 10
    """Soft tokens the context is compressed into (k)."""
    form: Literal["prompt", "prefix"] = "prompt"
    """prompt: input-embedding soft prompt; prefix: per-layer K/V prefix initialised from the context's own K/V."""
    steps: int = 100
    """Optimizer steps."""
    batch_size: int = 8
    """Queries per step."""
    lr: float | None = None
    """Peak learning rate (default: 1e-2)."""
    warmup_steps: int = 10
    """Linear warm-up steps."""
    schedule: Schedule = "linear"
    """Decay after warm-up: linear, cosine or constant."""
    clip_norm: float = 1.0
    """Gradient clipping max norm (0: off)."""
    temperature: float = 1.0
    """Distillation temperature T: KL between the T-softened distributions, scaled by T^2."""
    ce_weight: float = 0.0
    """Weight of a cross-entropy on reference answers (a query's "answer", else the teacher's continuation)."""
    continuation_tokens: int = 8
    """Tokens the teacher generates after each query; the KL is taken at each of them."""
    top_k: int = 64
    """Teacher log-probabilities kept per position (the rest of the vocabulary is one tail bin)."""
    sample: bool = False
    """Sample the teacher's continuations (T=1, seeded) instead of greedy decoding."""
    held_out: int = 64
    """Queries set aside to measure fidelity when no held-out list is given (at most a fifth of them)."""
    auto_queries: int = 256
    """Queries the model writes from the context when none are given."""
    max_tokens: int = 0
    """Limit on context + query + continuation tokens (0: the model's max positions)."""
    prefix_init: Literal["last", "spread"] = "spread"
    """prefix form: start from the context's K/V at its last k positions ('last') or k evenly spread ('spread')."""
    eval_every: int = 0
    """Measure held-out fidelity every N steps (0: only at the end)."""
    seed: int = 0
    """Seed of the query order, held-out split, sampling."""

    def problems(self) -> list[str]:
        out = []
        for name in ("tokens", "steps", "batch_size", "continuation_tokens", "top_k", "auto_queries"):
            if getattr(self, name) < 1:
                out.append(f"{name}={getattr(self, name)}: must be >= 1")
        for name in ("warmup_steps", "held_out", "max_tokens", "eval_every", "ce_weight", "clip_norm"):
            if getattr(self, name) < 0:
                out.append(f"{name}={getattr(self, name)}: must be >= 0")
        out += schedule_problems(self)
        if self.form not in ("prompt", "prefix"):
            out.append(f"form={self.form!r}: must be prompt (input embeddings) or prefix (per-layer K/V)")
        if not 0 < self.temperature <= 20:
            out.append(f"temperature={self.temperature}: must be in (0, 20]")
        if self.prefix_init not in ("last", "spread"):
            out.append(f"prefix_init={self.prefix_init!r}: must be last or spread")
        return out
