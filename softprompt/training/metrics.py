"""Metrics: one small interface writing JSONL and feeding trackers, plus the end-of-run PNG and terminal table.

A tracker is any callable taking a record dict ({"kind": "train" | "eval", "step": N, name: value, ...}); it may
have a `close()`. Every tracker sees exactly the records metrics.jsonl holds. Built in: TensorBoard
(`TrainConfig(report_to="tensorboard")`, the `track` extra), writing scalar `<kind>/<name>` at `step`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from softprompt.errors import InputError

Tracker = Callable[[dict[str, Any]], None]


class MetricsLog:
    """Appends one JSON object per record to `path` (if given), keeps them in memory and passes each to every
    tracker."""

    def __init__(self, path: Path | None = None, history: list[dict[str, Any]] | None = None,
                 trackers: Sequence[Tracker] = ()):
        self.path = Path(path) if path else None
        self.records: list[dict[str, Any]] = list(history or [])
        self.trackers = list(trackers)
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # rewrite from the kept history so a resumed run does not duplicate lines
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def log(self, **record: Any) -> None:
        self.records.append(record)
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        for t in self.trackers:
            t(record)

    def close(self) -> None:
        for t in self.trackers:
            if callable(getattr(t, "close", None)):
                t.close()


class TensorBoard:
    """Tracker writing each numeric field of a record as the scalar `<kind>/<name>` at its step."""

    def __init__(self, log_dir: Path, purge_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise InputError("report_to='tensorboard' needs the tensorboard package: pip install "
                             "'softprompt[track]'") from None
        # events at purge_step and later, left by a killed run after its last checkpoint, are dropped
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def __call__(self, record: dict[str, Any]) -> None:
        for name, value in record.items():
            if name not in ("kind", "step") and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(f"{record.get('kind', 'metrics')}/{name}", value, record["step"])

    def close(self) -> None:
        self.writer.close()


def make_trackers(report_to: str, out_dir: Path | None, start_step: int = 0) -> list[Tracker]:
    """The tracker `report_to` names ('none' or 'tensorboard'), writing under `out_dir` from the step after
    `start_step` on (none without a run directory: the processes other than the first write nothing)."""
    if report_to == "none" or out_dir is None:
        return []
    return [TensorBoard(Path(out_dir) / "tensorboard", start_step + 1)]


def plot_curves(records: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """PNG of the training loss and validation accuracy curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if "loss" in r and "step" in r and r.get("kind") == "train"]
    val = [r for r in records if r.get("kind") == "eval"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    steps, losses = [r["step"] for r in train], [r["loss"] for r in train]
    ax[0].plot(steps, losses, lw=0.8, alpha=0.35, label="per step")
    k = max(1, min(20, len(losses) // 5))  # moving average: batch losses are noisy
    smooth = [sum(losses[max(0, i - k + 1):i + 1]) / len(losses[max(0, i - k + 1):i + 1]) for i in range(len(losses))]
    ax[0].plot(steps, smooth, lw=1.8, label=f"mean of {k}")
    ax[0].legend()
    ax[0].set(xlabel="step", ylabel="training loss", title="loss")
    ax[1].plot([r["step"] for r in val], [r["accuracy"] for r in val], marker="o")
    ax[1].set(xlabel="step", ylabel="validation accuracy", title="validation")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table for the terminal."""
    cells = [[str(c) for c in columns]] + [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)
