"""Helpers shared by the bench scripts: interleaved timing, allocator peak memory, machine description, tables.

Every bench runs its baseline and its candidate in the same process, alternating (A B, B A, A B, ...), so
a neighbour's load on a shared machine hits both alike; it reports medians and the ratio of medians.

Peak memory is the peak of bytes held by torch's allocator during one call, relative to the bytes held when
the call starts (so the frozen weights, loaded before, do not count):
  * CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`.
  * CPU: torch.profiler with `profile_memory=True` records every allocation and free of the CPU allocator;
    the peak is the maximum of their running sum. This counts tensors only: oneDNN scratch space and
    Python objects are not included. It is deterministic, unlike resident-set sizes, which the C
    allocator's caching blurs and which only ever grow (`ru_maxrss`).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from a checkout
    sys.path.insert(0, str(ROOT))


# --- timing ---------------------------------------------------------------------------------------------

def sync(device: torch.device | str | None = None) -> None:
    if torch.cuda.is_available() and str(device or "").startswith("cuda"):
        torch.cuda.synchronize()


def time_call(fn: Callable[[], Any], device: Any = None) -> float:
    """Seconds one call of `fn` takes (device work included)."""
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                device: Any = None) -> dict[str, list[float]]:
    """Seconds per call of each function, run round-robin `repeats` times; the order alternates every round."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            out[n].append(time_call(fns[n], device))
    return out


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def iqr(xs: Sequence[float]) -> tuple[float, float]:
    """(25th, 75th) percentile."""
    if len(xs) < 4:
        return min(xs), max(xs)
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


# --- memory ---------------------------------------------------------------------------------------------

def peak_bytes(fn: Callable[[], Any], device: Any = None) -> int:
    """Peak bytes the torch allocator holds during `fn()`, above what it held at the start (see module doc)."""
    dev = str(device or "cpu")
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - start)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        if str(e.device_type()).endswith("CPU"):
            cur += e.nbytes()
            peak = max(peak, cur)
    return int(peak)


def dir_bytes(path: str | Path) -> int:
    """Bytes of every file under `path` (what `du --apparent-size -b` reports)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


# --- reporting ------------------------------------------------------------------------------------------

def machine() -> str:
    """One line: CPU model and cores (or GPU), torch version, threads, current load."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"load average {load:.1f} at start")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def markdown_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A Markdown table (floats with 3 significant decimals)."""
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def rotten_tomatoes_setup(args: Any) -> tuple[Any, Any, Any]:
    """Quiet logs, `args.threads` torch threads (0: torch's default), then the base model (`args.base`, `.dtype`,
    `.device`), the rotten_tomatoes data and its task: what the PEFT and train-step benches start from."""
    quiet()
    if args.threads:
        torch.set_num_threads(args.threads)

    import softprompt as sp
    from softprompt.training.run import load_data, make_task

    base = sp.load_base(args.base, dtype=args.dtype, device=args.device)
    return base, load_data("rotten_tomatoes"), make_task("rotten_tomatoes", None, None)


def quiet() -> None:
    """Silence transformers' loading bars and warnings, so the bench output is only its tables."""
    import logging
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TQDM_DISABLE", "1")
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:
        pass
