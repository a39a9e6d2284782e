"""The continuous-batching engine: a step loop (schedule -> execute -> update, the shape of vLLM's EngineCore.step).

Each step drops cancelled rows, admits waiting requests while rows, KV blocks and the tenant's share allow, feeds
every decoding row one token and the prefilling rows a chunk each under the step's token budget, and retires
finished rows at once (their KV blocks go back to the pool in the same step). Rows of one step carry any mix of
tasks and methods, or no prompt: soft tokens are input embeddings, prefixes are read from the prompt table's
single copy, adapters are routed per row. One worker thread runs the model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from softprompt.errors import InputError
from softprompt.model.generate import _pick
from softprompt.model.inject import row_embeds
from softprompt.serving.cache import ColdLoads, Entry, PartsCache
from softprompt.serving.classify import aggregate
from softprompt.serving.config import ServeConfig
from softprompt.serving.engine import Generated, Job, _fail, _resolve
from softprompt.serving.errors import QueueFull, ShuttingDown
from softprompt.serving.kv_pool import KVPool
from softprompt.serving.metrics import Metrics
from softprompt.serving.paged import PrefixTable, RowStep, check_paged, forward_rows
from softprompt.serving.runner import Runner
from softprompt.serving.scheduler import Limits, Row, Waiting, plan_chunks
from softprompt.serving.store import PromptHandle

log = logging.getLogger(__name__)


class ContinuousEngine:
    def __init__(self, runner: Runner, load: Callable[..., Entry], config: ServeConfig,
                 metrics: Metrics | None = None, read: Callable[[PromptHandle], Any] | None = None):
        """`load(handle, blob=None)` makes a version's Entry (on the model thread); `read(handle)`, when given,
        fetches its bytes (store I/O) on a loader thread first, so a cold prompt never stalls the step loop."""
        self.runner, self.config = runner, config
        self.base = runner.base
        self.metrics = metrics or Metrics()
        self.cache = PartsCache(load, config.cache_bytes)
        self.loads = ColdLoads(self.cache, read, self._wake, self.metrics.prompt_load_seconds)
        self.pool = KVPool(self.base, config.kv_cache_bytes, config.kv_block_size)
        self.limits = Limits(config.max_batch_size, config.max_step_tokens, config.tenant_share,
                             self.pool.usable_blocks)
        self.prefixes = PrefixTable(self.base)
        why = check_paged(self.base, self.pool, self.prefixes)
        if why is not None:
            raise InputError(f"the continuous scheduler cannot serve this {self.base.facts.model_type} model: its "
                             f"paged attention does not reproduce the model ({why}); serve it with --scheduler static")
        self._waiting = Waiting()
        self._running: list[Row] = []
        self._classify: dict[Job, dict[str, Any]] = {}  # job -> {"next": i, "left": n, "logps": [...]}
        self._entries: dict[Job, Entry | None] = {}
        self._cond = threading.Condition()
        self._alive = False
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.step_hook: Callable[[ContinuousEngine], None] | None = None
        """Called by the worker at the end of every step (tests: count steps, slow the model down)."""
        self.batch_hook: Callable[[list[Row]], None] | None = None
        """Called with the rows of every step before it runs (tests: see what shared a step)."""
        self.stats = {"batches": 0, "rows": 0, "max_rows": 0, "max_distinct": 0, "mixed_batches": 0}
        m = self.metrics
        m.kv_blocks_total.set(self.pool.usable_blocks)
        m.kv_bytes_per_token.set(self.pool.bytes_per_token)
        log.info("KV pool: %d blocks of %d tokens, %d bytes per token, %.1f MiB", self.pool.usable_blocks,
                 self.pool.block_size, self.pool.bytes_per_token, self.pool.nbytes / 2**20)

    # --- lifecycle ---
    def start(self) -> None:
        self._alive = True
        self._thread = threading.Thread(target=self._loop, name="softprompt-model", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._alive = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            left = list(self._waiting.drain())
        for row in list(self._running):
            self._retire(row)
            left.append(row.job)
        for job in left:
            _fail(job, ShuttingDown("the server is shutting down; retry on another replica"))
        self.loads.shutdown()

    def is_alive(self) -> bool:
        return self._alive and self._thread is not None and self._thread.is_alive()

    def queue_depth(self) -> int:
        return self._waiting.count

    def running_rows(self) -> int:
        return len(self._running)

    # --- admission ---
    def row_tokens(self, job: Job, n_virtual: int = 0) -> int:
        """KV tokens a row of `job` reserves in the pool (its own tokens; a shared prefix costs nothing)."""
        if job.classify is not None:
            return n_virtual + len(job.classify.prefix) + max(len(w) for w in job.classify.words) - 1
        return n_virtual + len(job.ids) + job.max_new_tokens

    def _check_fits(self, job: Job, n_virtual: int = 0) -> None:
        need = self.pool.blocks_for(self.row_tokens(job, n_virtual))
        cap = min(self.limits.tenant_blocks, self.pool.usable_blocks)
        if need > cap:
            raise InputError(f"a row of this request needs {need * self.pool.block_size} KV tokens (prompt + "
                             f"max_tokens + virtual tokens); one tenant may hold {cap * self.pool.block_size} on "
                             "this server: lower max_tokens or shorten the prompt (operators: raise "
                             "--kv-cache-bytes or --tenant-share)")

    def submit(self, jobs: list[Job]) -> list[Any]:
        """Queue every job of one request, or none (HTTP 429 when the queue is full, 400 when a row can never
        fit in this server's KV pool or the request holds too many rows)."""
        rows = sum(j.rows for j in jobs)
        if rows > self.config.max_request_rows:
            raise InputError(f"this request needs {rows} rows (choices, or inputs x verbalizer words); this "
                             f"server runs at most {self.config.max_request_rows} per request: send fewer inputs")
        for job in jobs:
            self._check_fits(job)
        with self._cond:
            if not self._alive:
                raise ShuttingDown("the server is not running (stopping or not started); retry shortly")
            if self._waiting.count + len(jobs) > self.config.max_queue:
                self.metrics.rejected.labels("queue_full").inc()
                raise QueueFull(f"the server is busy ({self._waiting.count} requests queued, limit "
                                f"{self.config.max_queue}); retry after a short wait")
            for job in jobs:
                job.tenant = job.tenant or (job.handle.tenant if job.handle is not None else "")
                self._waiting.add(job.tenant, job)
            self.metrics.queue_depth.set(self._waiting.count)
            self._cond.notify()
        return [j.future for j in jobs]

    # --- the worker ---
    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._alive and not self._running and not self._waiting.count:
                    self._cond.wait(0.5)
                if not self._alive:
                    return
            try:
                worked = self.step()
            except Exception as e:  # noqa: BLE001 - a failed step fails its rows, never the worker
                log.exception("step failed")
                for row in list(self._running):
                    self._retire(row)
                    self._classify.pop(row.job, None)
                    _fail(row.job, e)
                worked = True
            if not worked:
                with self._cond:
                    self._cond.wait(0.05)  # a finished read or a new request wakes it

    @torch.no_grad()
    def step(self) -> bool:
        """One scheduler step. -> whether any row ran."""
        t0 = time.perf_counter()
        self._reap()
        self._admit()
        decode = [r for r in self._running if not r.prefilling]
        chunks = plan_chunks([r for r in self._running if r.prefilling],
                             self.limits.max_step_tokens - len(decode))
        if not decode and not chunks:
            return False
        if self.batch_hook is not None:
            self.batch_hook(decode + [r for r, _ in chunks])
        n_tokens = self._execute(decode, chunks)
        self.steps += 1
        self._observe(decode, chunks, n_tokens, time.perf_counter() - t0)
        if self.step_hook is not None:
            self.step_hook(self)
        return True

    def _reap(self) -> None:
        """Cancelled rows leave now, and their KV blocks go back to the pool."""
        for row in list(self._running):
            if row.job.cancelled or row.job.future.cancelled():
                self._retire(row)
                self._classify.pop(row.job, None)
                row.job.future.cancel()

    def _admit(self) -> None:
        lim = self.limits
        rows_of: dict[str, int] = {}
        blocks_of: dict[str, int] = {}
        for r in self._running:
            rows_of[r.tenant] = rows_of.get(r.tenant, 0) + 1
            blocks_of[r.tenant] = blocks_of.get(r.tenant, 0) + len(r.blocks)
        with self._cond:
            order = self._waiting.rotate()
        blocked: set[str] = set()
        while len(self._running) < lim.max_rows and len(blocked) < len(order):
            for tenant in order:
                if tenant in blocked or len(self._running) >= lim.max_rows:
                    continue
                with self._cond:
                    q = self._waiting.queues.get(tenant)
                    job = q[0] if q else None
                if job is None or rows_of.get(tenant, 0) >= lim.tenant_rows:
                    blocked.add(tenant)
                    continue
                row = self._start_row(job, lim.tenant_blocks - blocks_of.get(tenant, 0))
                if row is None:
                    blocked.add(tenant)
                    continue
                if row is not False:
                    self._running.append(row)
                    rows_of[tenant] = rows_of.get(tenant, 0) + 1
                    blocks_of[tenant] = blocks_of.get(tenant, 0) + len(row.blocks)
        self.metrics.queue_depth.set(self._waiting.count)

    def _pop(self, job: Job) -> None:
        with self._cond:
            self._waiting.pop(job.tenant)
        self._entries.pop(job, None)
        if job.future.done():  # failed or cancelled: no row of it will report back
            self._classify.pop(job, None)

    def _start_row(self, job: Job, tenant_blocks_left: int) -> Row | None | bool:
        """The job's next row with its KV blocks, None when it must wait, False when the job left the queue."""
        if job.cancelled or job.future.done():
            self._pop(job)
            job.future.cancel()
            return False
        if job not in self._entries:
            try:
                entry = None if job.handle is None else self.loads.get(job.handle)
                if entry is None and job.handle is not None:
                    return None  # its bytes are still being read
                self._entries[job] = entry
                self._check_fits(job, self._n_virtual(entry))
            except Exception as e:  # noqa: BLE001 - only this request fails
                self._pop(job)
                _fail(job, e)
                return False
        entry = self._entries[job]
        parts = None if entry is None else entry.parts
        ids, word, index = job.ids, None, 0
        if job.classify is not None:
            state = self._classify.setdefault(job, {"next": 0, "left": job.rows, "logps": [0.0] * job.rows})
            index = state["next"]
            word = job.classify.words[index]
            ids = list(job.classify.prefix) + list(word[:-1])  # the last column predicts the word's last token
        need = self._n_virtual(entry) + len(ids) + (0 if word is not None else job.max_new_tokens)
        if self.pool.blocks_for(need) > tenant_blocks_left:
            return None
        blocks = self.pool.allocate(need)
        if blocks is None:
            return None
        gen = None
        if job.sampling.do_sample and job.seed is not None:
            gen = torch.Generator(device=self.base.device).manual_seed(job.seed)
        row = Row(job, parts, row_embeds(self.base, parts, ids), blocks, job.tenant, generator=gen, word=word,
                  index=index)
        self.metrics.kv_row_bytes.observe(len(blocks) * self.pool.block_size * self.pool.bytes_per_token)
        if word is None or index == job.rows - 1:
            self._pop(job)
        else:
            self._classify[job]["next"] = index + 1
        return row

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _n_virtual(self, entry: Entry | None) -> int:
        return 0 if entry is None else entry.parts.n_embed

    # --- execute and update ---
    def _execute(self, decode: list[Row], chunks: list[tuple[Row, int]]) -> int:
        emit: list[tuple[Row, torch.Tensor]] = []  # rows that pick a token, with their last hidden state [H]
        scores: list[tuple[Row, torch.Tensor, list[int]]] = []
        if decode:
            ids = torch.tensor([[r.next_token] for r in decode], device=self.base.device)  # [D,1]
            x = self.base.embed(ids)  # [D,1,H]
            h = forward_rows(self.base, self.pool, [RowStep(x[b], r.fed, r.blocks, r.parts)
                                                    for b, r in enumerate(decode)], self.prefixes)
            for b, r in enumerate(decode):
                r.fed += 1
                emit.append((r, h[b, 0]))
        if chunks:
            steps = [RowStep(r.inputs[r.fed:r.fed + c], r.fed, r.blocks, r.parts) for r, c in chunks]
            h = forward_rows(self.base, self.pool, steps, self.prefixes)  # [P,T,H]
            for b, (r, c) in enumerate(chunks):
                if r.word is not None:
                    self._score_columns(r, c, h[b], scores)
                r.fed += c
                if r.word is None and not r.prefilling:
                    emit.append((r, h[b, c - 1]))
        if scores:
            self._apply_scores(scores)
        if emit:
            self._emit(emit)
        return len(decode) + sum(c for _, c in chunks)

    def _score_columns(self, row: Row, c: int, h: torch.Tensor, out: list) -> None:
        """Collect the columns of this chunk that predict a token of the row's candidate word."""
        first = row.inputs.shape[0] - len(row.word)  # own index of the column predicting word[0]
        cols = [j for j in range(c) if 0 <= row.fed + j - first < len(row.word)]
        if cols:
            out.append((row, h[cols], [row.word[row.fed + j - first] for j in cols]))

    def _apply_scores(self, scores: list) -> None:
        h = torch.cat([hs for _, hs, _ in scores])  # [M,H]
        logp = torch.log_softmax(self.base.logits(h).float(), dim=-1)  # [M,V]
        target = torch.tensor([t for _, _, ts in scores for t in ts], device=h.device)
        got = logp.gather(-1, target[:, None])[:, 0].tolist()
        i = 0
        for row, _, ts in scores:
            row.logp += sum(got[i:i + len(ts)])
            i += len(ts)
        for row, _, _ in scores:
            if not row.prefilling:  # its last chunk held the column predicting the word's last token
                self._finish_candidate(row)

    def _finish_candidate(self, row: Row) -> None:
        self._retire(row)
        job = row.job
        state = self._classify.get(job)
        if state is None:
            return
        state["logps"][row.index] = row.logp
        state["left"] -= 1
        if state["left"] == 0:
            del self._classify[job]
            _resolve(job, aggregate(job.classify, state["logps"]))

    def _emit(self, emit: list[tuple[Row, torch.Tensor]]) -> None:
        logits = self.base.logits(torch.stack([h for _, h in emit]))  # [E,V]
        toks = logits.argmax(-1)
        groups: dict[Any, list[int]] = {}
        for i, (r, _) in enumerate(emit):
            if r.job.sampling.do_sample:
                groups.setdefault(r.job.sampling, []).append(i)
        for s, idx in groups.items():
            picked = _pick(logits[idx], True, s.temperature, s.top_p, [emit[i][0].generator for i in idx])
            toks[idx] = picked.to(toks.dtype)
        eos = self.runner.eos_token_id
        for (row, _), tok in zip(emit, toks.tolist()):
            self._update(row, tok, eos)

    def _update(self, row: Row, tok: int, eos: int | None) -> None:
        job = row.job
        if job.future.done():
            self._retire(row)
            return
        if tok == eos:
            return self._finish(row, "stop")
        job.tokens.append(tok)
        stopped = job.output.push(tok) if job.output is not None else False
        if job.on_token is not None:
            job.on_token(tok)
        if stopped:
            return self._finish(row, "stop")
        if len(job.tokens) >= job.max_new_tokens or job.cancelled:
            return self._finish(row, "length")
        row.next_token = tok

    def _finish(self, row: Row, reason: str) -> None:
        self._retire(row)
        job = row.job
        text = job.output.finish() if job.output is not None else self.runner.decode(job.tokens)
        _resolve(job, Generated(list(job.tokens), text, reason))

    def _retire(self, row: Row) -> None:
        if row in self._running:
            self._running.remove(row)
        self.pool.free(row.blocks)

    def _observe(self, decode: list[Row], chunks: list, n_tokens: int, dt: float) -> None:
        rows = decode + [r for r, _ in chunks]
        handles = {r.job.handle for r in rows}
        s = self.stats
        s["batches"] += 1
        s["rows"] += len(rows)
        s["max_rows"] = max(s["max_rows"], len(rows))
        s["max_distinct"] = max(s["max_distinct"], len(handles))
        s["mixed_batches"] += len(handles) > 1
        emitted = len(decode) + sum(1 for r, _ in chunks if r.word is None and not r.prefilling)
        self.metrics.observe_step(len(rows), n_tokens, emitted, dt, running=len(self._running),
                                  kv_used=self.pool.used_blocks, cache=self.cache)
