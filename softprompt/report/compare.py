"""Compare methods on one task and recommend one: measure, decide, write a Markdown report with PNG plots.

    ms = measure(base, task, train_records, test_records, ["prompt_tuning", "prefix_tuning"], TrainConfig(steps=100),
                 out_dir)
    rec = recommend(ms, Constraints(embedding_only=True, max_latency_ms=50))
    write_report(ms, rec, out_dir, setup={...})

Every number in the report is measured in this run: accuracy of the trained prompt on the test records, the
bytes of its saved artifact, training wall time, and the latency of one batched classification request
(the same fixed requests for every method, methods timed round-robin, median). The decision (`recommend`)
is a pure function of those numbers and the user's constraints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from softprompt import registry
from softprompt.config import Knobs
from softprompt.errors import InputError
from softprompt.templates import Template
from softprompt.training.task import Task, evaluate
from softprompt.training.tune import TrainConfig, train

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Measurement:
    """What one method achieved and cost on the task."""

    method: str
    accuracy: float
    trainable_params: int
    bytes_per_task: int
    train_seconds: float
    virtual_tokens: int
    """Extra positions per request: soft input tokens, or K/V prefix slots in every layer (0 for adapters)."""
    latency_ms: float
    embedding_only: bool
    n_test: int = 0
    reference: bool = False
    """A reference row (LoRA through PEFT): the row to beat, never recommended, since it changes the model's
    weights and softprompt cannot serve it."""


@dataclass(frozen=True)
class Constraints:
    embedding_only: bool = False
    """The serving stack accepts only input embeddings (e.g. vLLM prompt embeds): no K/V prefixes, no adapters."""
    max_bytes_per_task: int | None = None
    max_latency_ms: float | None = None
    accuracy_tolerance: float = 0.01
    """Accuracies within this of the best count as tied; ties go to the lower latency, then fewer bytes."""
    latency_tolerance: float = 0.05
    """Latencies within this fraction of the fastest tied method count as equal (timing noise): fewer bytes wins."""


@dataclass
class Recommendation:
    choice: str | None
    ranking: list[str]
    """Eligible methods, best first."""
    rejected: dict[str, list[str]] = field(default_factory=dict)
    """Method -> the constraints it violates."""
    reasons: list[str] = field(default_factory=list)


# --- the decision (pure) --------------------------------------------------------------------------------

def violations(m: Measurement, c: Constraints) -> list[str]:
    out = []
    if c.embedding_only and not m.embedding_only:
        out.append("changes more than the input embeddings, so an embedding-only endpoint cannot serve it")
    if c.max_bytes_per_task is not None and m.bytes_per_task > c.max_bytes_per_task:
        out.append(f"{m.bytes_per_task:,} bytes per task > the limit of {c.max_bytes_per_task:,}")
    if c.max_latency_ms is not None and m.latency_ms > c.max_latency_ms:
        out.append(f"{m.latency_ms:.1f} ms per request > the limit of {c.max_latency_ms:g} ms")
    return out


def rank(ms: Sequence[Measurement], tolerance: float, latency_tolerance: float = 0.05) -> list[Measurement]:
    """Best first. Methods within `tolerance` of the best accuracy are tied; among them the fastest leads, and
    latencies within `latency_tolerance` (relative) of the fastest are tied too and go to fewer bytes. The
    other tied methods follow by latency, then the rest by accuracy."""
    if not ms:
        return []
    best = max(m.accuracy for m in ms)
    tied = [m for m in ms if m.accuracy >= best - tolerance]
    fastest = min(m.latency_ms for m in tied)
    quick = sorted((m for m in tied if m.latency_ms <= fastest * (1 + latency_tolerance)),
                   key=lambda m: (m.bytes_per_task, m.latency_ms))
    slow = sorted((m for m in tied if m not in quick), key=lambda m: (m.latency_ms, m.bytes_per_task))
    rest = sorted((m for m in ms if m not in tied), key=lambda m: (-m.accuracy, m.latency_ms, m.bytes_per_task))
    return quick + slow + rest


def recommend(ms: Sequence[Measurement], c: Constraints = Constraints()) -> Recommendation:
    """Filter by the constraints, then pick the most accurate; near-ties go to lower latency, then fewer bytes."""
    refs = [m for m in ms if m.reference]
    ms = [m for m in ms if not m.reference]
    rejected = {m.method: v for m in ms if (v := violations(m, c))}
    ranked = rank([m for m in ms if m.method not in rejected], c.accuracy_tolerance, c.latency_tolerance)
    rec = Recommendation(ranked[0].method if ranked else None, [m.method for m in ranked], rejected)
    rec.reasons = _explain(ms, ranked, rejected, c) + [_against_reference(r, ranked) for r in refs]
    return rec


def _against_reference(ref: Measurement, ranked: list[Measurement]) -> str:
    """The recommended method against the reference row (the one to beat)."""
    head = (f"{ref.method} (the reference to beat: it changes the model's weights, so it is not served here) has "
            f"accuracy {ref.accuracy:.3f} with {ref.trainable_params:,} trainable parameters and "
            f"{_kib(ref.bytes_per_task)} per task")
    if not ranked:
        return head + "."
    win = ranked[0]
    verdict = "at or above it" if win.accuracy >= ref.accuracy else "below it"
    return (f"{head}; {win.method} is {win.accuracy - ref.accuracy:+.3f} against it ({verdict}) with "
            f"{win.trainable_params:,} trainable parameters and {_kib(win.bytes_per_task)} per task.")


def _explain(ms: Sequence[Measurement], ranked: list[Measurement], rejected: dict[str, list[str]],
             c: Constraints) -> list[str]:
    given = ["embedding-only serving"] if c.embedding_only else []
    if c.max_bytes_per_task is not None:
        given.append(f"at most {c.max_bytes_per_task:,} bytes per task")
    if c.max_latency_ms is not None:
        given.append(f"at most {c.max_latency_ms:g} ms per request")
    out = [f"Constraints: {', '.join(given) if given else 'none'}. Accuracies within {c.accuracy_tolerance:.3f} of "
           f"the best count as tied; ties go to the lower latency (within {c.latency_tolerance:.0%} counts as "
           f"equal), then to fewer bytes."]
    for name, why in rejected.items():
        out.append(f"{name} is excluded: {'; '.join(why)}.")
    if not ranked:
        out.append("No method satisfies every constraint: relax one (the exclusions above say which bind).")
        return out
    win = ranked[0]
    out.append(f"{win.method} is recommended: accuracy {win.accuracy:.3f}, {win.latency_ms:.1f} ms per request, "
               f"{_kib(win.bytes_per_task)} per task, {win.virtual_tokens} extra positions per request, "
               f"{'servable' if win.embedding_only else 'not servable'} on an embedding-only endpoint.")
    tied = [m for m in ranked[1:] if m.accuracy >= max(x.accuracy for x in ranked) - c.accuracy_tolerance]
    for m in tied:
        slower = m.latency_ms > win.latency_ms * (1 + c.latency_tolerance)
        why = (f"slower ({m.latency_ms:.1f} ms against {win.latency_ms:.1f} ms)" if slower else
               f"as fast within timing noise ({m.latency_ms:.1f} ms) but larger ({_kib(m.bytes_per_task)} against "
               f"{_kib(win.bytes_per_task)})")
        out.append(f"{m.method} is as accurate within the tolerance ({m.accuracy:.3f}) but {why}.")
    for m in ranked[1 + len(tied):]:
        out.append(f"{m.method} is less accurate ({m.accuracy:.3f}, {m.accuracy - win.accuracy:+.3f}).")
    overall = rank(list(ms), c.accuracy_tolerance, c.latency_tolerance)[0]
    if overall.method != win.method:
        out.append(f"Without the constraints {overall.method} would be chosen (accuracy {overall.accuracy:.3f}); the "
                   f"constraints cost {overall.accuracy - win.accuracy:.3f} accuracy.")
    out.append(_serving_note(win, [m for m in ms if m.method != win.method], c.accuracy_tolerance))
    return out


def _serving_note(win: Measurement, others: Sequence[Measurement], tolerance: float) -> str:
    """How the choice serves many tasks, against the best alternative of the other kind (embedding-only or not)."""
    per_1000 = f"each task costs {_kib(win.bytes_per_task)} ({_mib(win.bytes_per_task * 1000)} for 1,000 tasks)"
    if win.embedding_only:
        note = (f"For a multi-task service, {win.method} changes only the input embeddings: one unmodified copy of "
                f"the base serves every task, requests of different tasks share a batch, and {per_1000}.")
    else:
        note = (f"{win.method} works inside the model, so the server must run softprompt's injection (K/V prefixes "
                f"or adapter hooks); requests of different tasks still share a batch, and {per_1000}.")
    alt = rank([m for m in others if m.embedding_only != win.embedding_only], tolerance)
    fastest = min(others, key=lambda m: m.latency_ms, default=None)
    if fastest is not None and fastest.latency_ms < 0.95 * win.latency_ms and (not alt or fastest is not alt[0]):
        how = ("its prefix is a per-layer K/V cache computed once, so its virtual positions are attended to but never "
               "run through the layers" if not fastest.embedding_only and fastest.virtual_tokens else
               "it adds fewer positions per request")
        note += (f" {fastest.method} answers faster ({fastest.latency_ms:.1f} ms against {win.latency_ms:.1f} ms: "
                 f"{how}); accuracy {fastest.accuracy:.3f}, {_kib(fastest.bytes_per_task)} per task, "
                 f"{'servable' if fastest.embedding_only else 'not servable'} on an embedding-only endpoint.")
    if alt:
        m = alt[0]
        what = ("changes only the input embeddings" if m.embedding_only else
                f"attends to {m.virtual_tokens} extra K/V positions in every layer" if m.virtual_tokens else
                "runs adapter layers in every block")
        note += (f" The best alternative of the other kind, {m.method}, {what}: accuracy {m.accuracy:.3f} "
                 f"({m.accuracy - win.accuracy:+.3f}), {m.latency_ms:.1f} ms per request against "
                 f"{win.latency_ms:.1f} ms, {_kib(m.bytes_per_task)} per task.")
    return note


def _serving_kind(m: Measurement) -> str:
    if m.embedding_only:
        return "yes: it changes only the input embeddings"
    if m.virtual_tokens:
        return "no: it adds a key/value prefix to the attention of every layer"
    return "no: it adds adapter layers inside every block"


def _kib(n: float) -> str:
    """Bytes in KiB below 1 MiB, else MiB."""
    return f"{n / 1024:.1f} KiB" if n < 2**20 else _mib(n)


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


# --- measuring ------------------------------------------------------------------------------------------

def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(base: Any, task: Task, train_records: Sequence[Mapping[str, Any]],
            test_records: Sequence[Mapping[str, Any]], methods: Sequence[str], cfg: TrainConfig, out_dir: str | Path,
            *, num_virtual_tokens: int = 20, hybrid_template: str | None = None, latency_batch: int = 8,
            latency_repeats: int = 5, progress: bool = False, reference: str | None = "lora") -> list[Measurement]:
    """Train each method on `task`, save its artifact under out_dir/artifacts, score it, then time requests.
    `reference="lora"` adds PEFT's LoRA r=8 on q_proj, v_proj, trained with the same recipe on the same task
    (training/reference.py), as the last row: its layers are in the model only while it is trained, scored and
    timed (alone, after the others)."""
    if task.verbalizer is None:
        raise InputError("compare needs a classification task (a verbalizer): accuracy is its main measure")
    if reference:
        from softprompt.training.reference import check_available

        check_available(reference)  # before any training: a missing PEFT must not cost the other methods' runs
    import softprompt as sp

    out = Path(out_dir)
    warm = task.encode_all(test_records[:2], base.tokenizer)
    with torch.no_grad():
        task.class_scores(base, [None] * len(warm), warm)  # one-time start-up costs, not charged to the first method
    trained = []
    for method in methods:
        config = registry.build_config(method, Knobs(num_virtual_tokens=num_virtual_tokens,
                                                     soft_template=hybrid_template))
        own = config.task_template()  # a hybrid prompt trains on its own template
        t = Task(Template.parse(own), task.verbalizer, task.max_length) if own else task
        tr, te = t.encode_all(train_records, base.tokenizer), t.encode_all(test_records, base.tokenizer)
        prompted = sp.attach(base, config)
        res = train(prompted, t, tr, [], cfg, progress=progress)
        acc = evaluate(base, prompted, t, te)["accuracy"]
        path = prompted.save(out / "artifacts" / method, **t.to_extra(), test_accuracy=acc)
        log.info("%s: accuracy %.3f after %d steps (%.1f s)", method, acc, res.steps_done, res.seconds)
        trained.append((method, prompted, t, te, acc, res.seconds, _dir_bytes(path)))
    latency = _latencies([(m, p, t, te[:latency_batch]) for m, p, t, te, *_ in trained], base, latency_repeats)
    out_ms = [Measurement(method=m, accuracy=acc, trainable_params=p.num_trainable(), bytes_per_task=size,
                          train_seconds=secs, virtual_tokens=int(p.config.num_virtual_tokens),
                          latency_ms=latency[m], embedding_only=registry.get(m).embedding_only, n_test=len(te))
              for m, p, t, te, acc, secs, size in trained]
    if reference:
        out_ms.append(_measure_reference(base, task, train_records, test_records, reference, cfg, out,
                                         latency_batch, latency_repeats, progress))
    return out_ms


def _measure_reference(base: Any, task: Task, train_records: Sequence[Mapping[str, Any]],
                       test_records: Sequence[Mapping[str, Any]], kind: str, cfg: TrainConfig, out: Path,
                       latency_batch: int, latency_repeats: int, progress: bool) -> Measurement:
    from softprompt.training.reference import reference as make_reference

    tr, te = task.encode_all(train_records, base.tokenizer), task.encode_all(test_records, base.tokenizer)
    with make_reference(base, kind, seed=cfg.seed) as ref:
        res = train(ref, task, tr, [], cfg, progress=progress)
        acc = evaluate(base, ref, task, te)["accuracy"]
        path = ref.save(out / "artifacts" / ref.method, test_accuracy=acc)
        ms = _latencies([(ref.method, ref, task, te[:latency_batch])], base, latency_repeats)[ref.method]
        log.info("%s: accuracy %.3f after %d steps (%.1f s)", ref.method, acc, res.steps_done, res.seconds)
        return Measurement(method=ref.method, accuracy=acc, trainable_params=ref.num_trainable(),
                           bytes_per_task=_dir_bytes(path), train_seconds=res.seconds, virtual_tokens=0,
                           latency_ms=ms, embedding_only=False, n_test=len(te), reference=True)


@torch.no_grad()
def _latencies(items: list[tuple[str, Any, Task, list]], base: Any, repeats: int) -> dict[str, float]:
    """Median ms of one batched classification forward per method, methods timed round-robin."""
    for _, p, t, batch in items:  # warm-up
        t.class_scores(base, [p] * len(batch), batch)
    times: dict[str, list[float]] = {m: [] for m, *_ in items}
    for r in range(repeats):
        for m, p, t, batch in (items if r % 2 == 0 else items[::-1]):
            tic = time.perf_counter()
            t.class_scores(base, [p] * len(batch), batch)
            if base.device.type == "cuda":
                torch.cuda.synchronize()
            times[m].append((time.perf_counter() - tic) * 1e3)
    return {m: sorted(v)[len(v) // 2] for m, v in times.items()}


# --- the report -----------------------------------------------------------------------------------------

SECTIONS = ("Setup", "Summary", "Accuracy", "Trainable parameters", "Bytes per task", "Training time",
            "Extra tokens per request", "Request latency", "Embedding-only serving", "Recommendation")

PLOTS = {"accuracy": ("accuracy", "test accuracy", False), "trainable_params": ("trainable_params",
         "trainable parameters", True), "bytes_per_task": ("bytes_per_task", "bytes per task (saved artifact)", True),
         "train_seconds": ("train_seconds", "training time (s)", False),
         "virtual_tokens": ("virtual_tokens", "extra positions per request", False),
         "latency_ms": ("latency_ms", "request latency (ms)", False)}


def _bar(path: Path, ms: Sequence[Measurement], attr: str, label: str, log_scale: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m.method for m in ms]
    vals = [float(getattr(m, attr)) for m in ms]
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    bars = ax.bar(names, vals, color=["#999999" if m.reference else "#4c72b0" if m.embedding_only else "#dd8452"
                                      for m in ms])
    ax.bar_label(bars, labels=[_kib(v) if attr == "bytes_per_task" else f"{v:,.0f}" if v >= 100 else f"{v:.3g}"
                               for v in vals], fontsize=8)
    if log_scale and all(v > 0 for v in vals):
        ax.set_yscale("log")
        ax.set_ylim(top=max(vals) * 3)  # room for the labels
    elif vals and max(vals) > 0:
        ax.set_ylim(top=max(vals) * 1.15)
    ax.set_ylabel(label)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.set_title(f"{label} (blue: embedding-only; grey: reference)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(ms: Sequence[Measurement], rec: Recommendation, out_dir: str | Path,
                 setup: Mapping[str, Any] | None = None) -> Path:
    """Write out_dir/report.md and one PNG per measure next to it; returns the report's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, (attr, label, log_scale) in PLOTS.items():
        _bar(out / f"{name}.png", ms, attr, label, log_scale)
    lines = ["# softprompt compare", "", "## Setup", ""]
    lines += [f"- {k}: {v}" for k, v in (setup or {}).items()]
    lines += ["", "## Summary", "", "| method | accuracy | trainable params | bytes per task | training s | "
              "extra positions | latency ms | embedding-only |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {m.method}{' (reference)' if m.reference else ''} | {m.accuracy:.3f} | {m.trainable_params:,} | "
              f"{m.bytes_per_task:,} | {m.train_seconds:.1f} | {m.virtual_tokens} | {m.latency_ms:.1f} | "
              f"{'yes' if m.embedding_only else 'no'} |" for m in ms]
    n = max((m.n_test for m in ms), default=0)
    se = (0.25 / n) ** 0.5 if n else float("nan")
    text = {
        "Accuracy": f"Accuracy of the trained prompt on {n} test examples (argmax of the verbalizer's class scores). "
                    f"With {n} examples one standard error is up to {se:.3f}.",
        "Trainable parameters": "Parameters the optimizer updates (prompt encoders and reparameterisations "
                                "included; saving folds them away).",
        "Bytes per task": "Bytes of the saved artifact directory (safetensors + manifest): what each extra task "
                          "costs to store and to ship to a server.",
        "Training time": "Wall time of the training loop (same steps, batch size and machine for every method).",
        "Extra tokens per request": "Soft input tokens lengthen every request; prefix and deep prompts instead add "
                                    "K/V positions that every layer attends to; adapters add none but run extra "
                                    "layers of their own.",
        "Request latency": "Median time of one batched classification forward over the same fixed requests, "
                           "methods timed round-robin (a reference row is timed alone, after them: its layers "
                           "are in the model only while it is measured).",
        "Embedding-only serving": "Whether the method changes only the input embeddings, so a server that accepts "
                                  "input embeddings (vLLM prompt embeds, any unmodified model) can serve it.",
    }
    plot_of = {"Accuracy": "accuracy", "Trainable parameters": "trainable_params", "Bytes per task": "bytes_per_task",
               "Training time": "train_seconds", "Extra tokens per request": "virtual_tokens",
               "Request latency": "latency_ms"}
    for sec in SECTIONS[2:-1]:
        lines += ["", f"## {sec}", "", text[sec], ""]
        if sec in plot_of:
            lines.append(f"![{sec}]({plot_of[sec]}.png)")
        else:
            lines += [f"- {m.method}: {_serving_kind(m)}" for m in ms]
    lines += ["", "## Recommendation", "", f"**{rec.choice or 'none'}**", ""]
    lines += [f"- {r}" for r in rec.reasons]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
