"""The static engine (`--scheduler static`, the baseline): a bounded request queue, dynamic batching and the
prompt table, around one model worker thread.

Requests wait at most `batch_wait_ms` (or until `max_batch_size` rows are queued), then run as one mixed batch:
rows carry different tasks and methods, or no prompt at all. The worker thread is the only one that runs the
model (torch releases the GIL, so the HTTP event loop stays responsive).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from softprompt.serving.cache import Entry, PartsCache
from softprompt.serving.classify import Candidates, aggregate
from softprompt.serving.config import ServeConfig
from softprompt.serving.errors import QueueFull, ShuttingDown
from softprompt.serving.metrics import Metrics
from softprompt.serving.runner import GREEDY, Runner, Sampling
from softprompt.serving.store import PromptHandle

log = logging.getLogger(__name__)


@dataclass
class Generated:
    tokens: list[int]
    text: str
    finish_reason: str  # "stop" (eos or a stop string) | "length"


@dataclass(eq=False)
class Job:
    """One row of generation, or one input to classify (one row per candidate word)."""

    handle: PromptHandle | None
    ids: list[int] = field(default_factory=list)
    max_new_tokens: int = 0
    sampling: Sampling = GREEDY
    stop: tuple[str, ...] = ()
    seed: int | None = None
    """Sampling seed of this row alone: its tokens do not depend on the rows it is batched with."""
    on_token: Callable[[int], None] | None = None
    """Called from the worker thread with each new token (streaming)."""
    classify: Candidates | None = None
    future: Future = field(default_factory=Future)
    cancelled: bool = False
    tokens: list[int] = field(default_factory=list)
    tenant: str = ""
    """Who asked (fair shares between tenants); the handle's tenant when there is a handle."""
    output: Any = None
    """The processor's per-row text state: `push(token) -> bool` (True: a stop string ended the text) and
    `text` (incremental detokenizing and stop strings happen there, once). None: the engine decodes at the end."""

    @property
    def rows(self) -> int:
        return len(self.classify.words) if self.classify is not None else 1


class Engine:
    def __init__(self, runner: Runner, load: Callable[[PromptHandle], Entry], config: ServeConfig,
                 metrics: Metrics | None = None):
        self.runner, self.config = runner, config
        self.metrics = metrics or Metrics()
        self.cache = PartsCache(load, config.cache_bytes)
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._running = False
        self._thread: threading.Thread | None = None
        self.stats = {"batches": 0, "rows": 0, "max_rows": 0, "max_distinct": 0, "mixed_batches": 0}

    # --- lifecycle ---
    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="softprompt-model", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            left, self._queue = list(self._queue), deque()
        for job in left:
            _fail(job, ShuttingDown("the server is shutting down; retry on another replica"))

    # --- admission ---
    def submit(self, jobs: list[Job]) -> list[Future]:
        """Queue every job of one request, or none of them (HTTP 429) when they do not all fit."""
        with self._cond:
            if not self._running:
                raise ShuttingDown("the server is not running (stopping or not started); retry shortly")
            if len(self._queue) + len(jobs) > self.config.max_queue:
                self.metrics.rejected.labels("queue_full").inc()
                raise QueueFull(f"the server is busy ({len(self._queue)} requests queued, limit "
                                f"{self.config.max_queue}); retry after a short wait")
            self._queue.extend(jobs)
            self.metrics.queue_depth.set(len(self._queue))
            self._cond.notify()
        return [j.future for j in jobs]

    def is_alive(self) -> bool:
        return self._running and self._thread is not None and self._thread.is_alive()

    def queue_depth(self) -> int:
        return len(self._queue)

    # --- the worker ---
    def _loop(self) -> None:
        while True:
            jobs = self._collect()
            if jobs is None:
                return
            if not jobs:
                continue
            try:
                self._run(jobs)
            except Exception as e:  # noqa: BLE001 - a failed batch fails its jobs, never the worker
                log.exception("batch failed")
                for job in jobs:
                    _fail(job, e)

    def _collect(self) -> list[Job] | None:
        cfg = self.config
        with self._cond:
            while not self._queue:
                if not self._running:
                    return None
                self._cond.wait(0.5)
            deadline = time.monotonic() + cfg.batch_wait_ms / 1000
            while self._running and sum(j.rows for j in self._queue) < cfg.max_batch_size:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, rest, rows = [], deque(), 0
            head = self._queue[0]
            while self._queue:
                job = self._queue.popleft()
                if job.cancelled:
                    job.future.cancel()
                    continue
                fits = not batch or rows + job.rows <= cfg.max_batch_size
                same = cfg.batch_policy == "mixed" or job.handle == head.handle
                if fits and same:
                    batch.append(job)
                    rows += job.rows
                else:
                    rest.append(job)
            self._queue = rest
            self.metrics.queue_depth.set(len(self._queue))
        return batch

    def _run(self, jobs: list[Job]) -> None:
        entries: dict[PromptHandle, Any] = {}
        for h in {j.handle for j in jobs if j.handle is not None}:
            try:
                entries[h] = self.cache.get(h)  # servability was checked when the version loaded
            except Exception as e:  # noqa: BLE001 - only the rows of this version fail
                entries[h] = e
        ready = []
        for job in jobs:
            got = entries.get(job.handle) if job.handle is not None else None
            if isinstance(got, Exception):
                _fail(job, got)
            else:
                ready.append(job)
        self._observe(ready)
        classify = [j for j in ready if j.classify is not None]
        groups: dict[Sampling, list[Job]] = {}
        for j in ready:
            if j.classify is None:
                groups.setdefault(j.sampling, []).append(j)
        if classify:
            self._classify(classify, entries)
        for sampling, group in groups.items():
            self._generate(group, entries, sampling)

    def _observe(self, jobs: list[Job]) -> None:
        rows = sum(j.rows for j in jobs)
        distinct = len({j.handle for j in jobs})
        s = self.stats
        s["batches"] += 1
        s["rows"] += rows
        s["max_rows"] = max(s["max_rows"], rows)
        s["max_distinct"] = max(s["max_distinct"], distinct)
        s["mixed_batches"] += distinct > 1
        self.metrics.batch_size.observe(rows)
        self.metrics.cache_bytes.set(self.cache.nbytes)
        self.metrics.cache_entries.set(len(self.cache))

    def _generate(self, group: list[Job], entries: dict, sampling: Sampling) -> None:
        eos = self.runner.eos_token_id
        prompts = [entries[j.handle].parts if j.handle is not None else None for j in group]
        n_tokens = 0

        def on_step(emitted: list[int | None]) -> None:
            nonlocal n_tokens
            for job, tok in zip(group, emitted):
                if tok is None or job.future.done():
                    continue
                if tok == eos:
                    self._finish(job, "stop")
                    continue
                job.tokens.append(tok)
                n_tokens += 1
                stopped = job.output.push(tok) if job.output is not None else False
                if job.on_token is not None:
                    job.on_token(tok)
                if stopped:
                    self._finish(job, "stop")
                    continue
                if job.stop and job.output is None and self._hit_stop(job):
                    continue
                if len(job.tokens) >= job.max_new_tokens or job.cancelled:
                    self._finish(job, "length")

        t0 = time.perf_counter()
        try:
            self.runner.generate(prompts, [j.ids for j in group], max(j.max_new_tokens for j in group), sampling,
                                 on_step, seeds=[j.seed for j in group])
        except Exception as e:  # noqa: BLE001
            log.exception("generation failed")
            for job in group:
                _fail(job, e)
        dt = time.perf_counter() - t0
        for job in group:
            if not job.future.done():
                self._finish(job, "length")
        self.metrics.batch_seconds.observe(dt)
        self.metrics.tokens.inc(n_tokens)
        self.metrics.tokens_per_second.set(n_tokens / dt if dt > 0 else 0.0)

    def _hit_stop(self, job: Job) -> bool:
        text = self.runner.decode(job.tokens)
        cut = min((i for i in (text.find(s) for s in job.stop) if i >= 0), default=-1)
        if cut < 0:
            return False
        _resolve(job, Generated(list(job.tokens), text[:cut], "stop"))
        return True

    def _finish(self, job: Job, reason: str) -> None:
        text = job.output.finish() if job.output is not None else self.runner.decode(job.tokens)
        _resolve(job, Generated(list(job.tokens), text, reason))

    def _classify(self, jobs: list[Job], entries: dict) -> None:
        prompts, prefixes, words = [], [], []
        for j in jobs:
            parts = entries[j.handle].parts if j.handle is not None else None
            for w in j.classify.words:
                prompts.append(parts)
                prefixes.append(j.classify.prefix)
                words.append(w)
        t0 = time.perf_counter()
        try:
            logps = self.runner.score(prompts, prefixes, words)
        except Exception as e:  # noqa: BLE001
            log.exception("classification failed")
            for j in jobs:
                _fail(j, e)
            return
        self.metrics.batch_seconds.observe(time.perf_counter() - t0)
        i = 0
        for j in jobs:
            n = len(j.classify.words)
            _resolve(j, aggregate(j.classify, logps[i:i + n]))
            i += n


def _resolve(job: Job, result: Any) -> None:
    if not job.future.done():
        try:
            job.future.set_result(result)
        except Exception:  # noqa: BLE001 - cancelled meanwhile
            pass


def _fail(job: Job, error: BaseException) -> None:
    if not job.future.done():
        try:
            job.future.set_exception(error)
        except Exception:  # noqa: BLE001
            pass
