"""Metrics: one small interface writing JSONL, plus the end-of-run PNG and terminal table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    """Appends one JSON object per record to `path` (if given) and keeps them in memory."""

    def __init__(self, path: Path | None = None, history: list[dict[str, Any]] | None = None):
        self.path = Path(path) if path else None
        self.records: list[dict[str, Any]] = list(history or [])
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # rewrite from the kept history so a resumed run does not duplicate lines
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def log(self, **record: Any) -> None:
        self.records.append(record)
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


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
