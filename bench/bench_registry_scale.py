"""Registry scale: many registered tasks with Zipf-distributed traffic through the prompt table, against 8 hot tasks.

    python bench/bench_registry_scale.py --base tiny --tasks 200 --requests 64       # proves it runs (seconds)
    python bench/bench_registry_scale.py --base smollm2 --tasks 10000 --requests 2000 --cache-bytes 268435456

Every task is a prompt-tuning version of its own (own seed) in one store, spread over 16 tenants. Requests go
to the continuous engine (no HTTP: this measures the engine and its prompt table, an LRU capped in bytes), with
`--clients` outstanding at a time (closed loop), greedy, exactly --max-tokens each (end-of-sequence ignored):

  hot8   every request picks one of 8 tasks (all stay in the prompt table)
  zipf   request k picks task rank r with probability ~ 1/r^s over all --tasks (s = --zipf, 1.1)

Reported: tokens/s of each (the best of --repeats, interleaved), zipf / hot8 (target >= 0.9), the prompt table's
hit rate, and the cold-load latency (store read on a loader thread + validation + parts computed once on the
model thread, as the request waits for it) p50 / p95 / max.
"""

from __future__ import annotations

import argparse
import bisect
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
from common import machine  # noqa: F401 - sets sys.path for softprompt

import softprompt as sp
from softprompt.serving.config import ServeConfig
from softprompt.serving.engine import Job
from softprompt.serving.service import build_service
from softprompt.serving.store import Store, open_store


def load_base(name: str, dtype: str) -> sp.Base:
    if name == "tiny":
        from tests.tiny import tiny_base

        return tiny_base("llama")
    return sp.load_base(name, dtype=dtype)


def fill_store(base: sp.Base, store: Store, n: int, virtual_tokens: int) -> list:
    """n prompt-tuning tasks (own tensors each) over 16 tenants -> their handles, in rank order."""
    store.bind_base(base.fingerprint)
    tenants = [f"t{i}" for i in range(16)]
    for t in tenants:
        store.create_tenant(t)
    p = sp.attach(base, sp.PromptTuningConfig(num_virtual_tokens=virtual_tokens, init="random", seed=0))
    handles = []
    t0 = time.perf_counter()
    for i in range(n):
        with torch.no_grad():
            for prm in p.parameters():
                prm.normal_(0, 0.02, generator=torch.Generator().manual_seed(i))
        tenant = tenants[i % len(tenants)]
        store.push(tenant, f"task-{i}", *p.to_bytes(), method="prompt_tuning")
        handles.append(store.resolve(tenant, f"task-{i}")[0])
    print(f"  registered {n} tasks in {time.perf_counter() - t0:.1f} s", flush=True)
    return handles


def zipf_picker(n: int, s: float, seed: int):
    cum, total = [], 0.0
    for r in range(1, n + 1):
        total += 1 / r**s
        cum.append(total)
    rng = random.Random(seed)
    return lambda: bisect.bisect_left(cum, rng.random() * total)


def run(engine, picks: list, prompts: list[list[int]], clients: int, max_tokens: int) -> tuple[float, int]:
    """Closed loop with `clients` requests outstanding -> (seconds, tokens)."""
    lock, done = threading.Lock(), threading.Event()
    state = {"next": 0, "finished": 0, "tokens": 0}

    def submit_next() -> None:
        with lock:
            i = state["next"]
            if i >= len(picks):
                return
            state["next"] += 1
        job = Job(picks[i], prompts[i % len(prompts)], max_tokens)
        job.future.add_done_callback(finished)
        engine.submit([job])

    def finished(f) -> None:
        with lock:
            state["finished"] += 1
            if f.exception() is not None:
                raise SystemExit(f"a request failed: {f.exception()!r}")
            state["tokens"] += len(f.result().tokens)
            last = state["finished"] == len(picks)
        if last:
            done.set()
        else:
            submit_next()

    t0 = time.perf_counter()
    for _ in range(min(clients, len(picks))):
        submit_next()
    done.wait()
    return time.perf_counter() - t0, state["tokens"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="tiny")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--virtual-tokens", type=int, default=20)
    ap.add_argument("--cache-bytes", type=int, default=256 << 20, help="byte cap of the prompt table")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads or args.base == "tiny":
        torch.set_num_threads(args.threads or 1)
    base = load_base(args.base, args.dtype)
    print(f"# bench_registry_scale on {machine()}", flush=True)
    with tempfile.TemporaryDirectory() as d:
        store = open_store(Path(d) / "registry")
        handles = fill_store(base, store, args.tasks, args.virtual_tokens)
        cfg = ServeConfig(max_batch_size=args.clients, max_queue=4 * args.clients,
                          max_prompts_per_request=min(16, 4 * args.clients), cache_bytes=args.cache_bytes,
                          max_step_tokens=max(512, 2 * args.clients), tenant_share=1.0)
        sv = build_service(base, store, cfg)
        sv.runner.ignore_eos = True
        words = "the registry holds many tasks and the table keeps the hot ones ready".split()
        prompts = base.encode([" ".join(words[i % 5:i % 5 + 4 + i % 7]) for i in range(64)])
        pick = zipf_picker(args.tasks, args.zipf, seed=1)
        scenarios = {"hot8": [handles[i % 8] for i in range(args.requests)],
                     "zipf": [handles[pick()] for _ in range(args.requests)]}
        sv.engine.start()
        best = dict.fromkeys(scenarios, 0.0)
        try:
            run(sv.engine, scenarios["hot8"][:args.clients], prompts, args.clients, 2)  # warm-up
            for _ in range(args.repeats):
                for name, picks in scenarios.items():
                    seconds, tokens = run(sv.engine, picks, prompts, args.clients, args.max_tokens)
                    best[name] = max(best[name], tokens / seconds)
        finally:
            sv.engine.stop()
        cache = sv.engine.cache
        distinct = len(set(scenarios["zipf"]))
        print(f"  hot8  {best['hot8']:9.1f} tok/s")
        print(f"  zipf  {best['zipf']:9.1f} tok/s   ({distinct} distinct tasks in {args.requests} requests)")
        print(f"  zipf / hot8 = {best['zipf'] / best['hot8']:.2f} (target >= 0.9)")
        print(f"  prompt table: {cache.hits} hits, {cache.misses} misses (hit rate "
              f"{cache.hits / max(1, cache.hits + cache.misses):.1%}), {len(cache)} entries, "
              f"{cache.nbytes / 2**20:.1f} MiB of {args.cache_bytes / 2**20:.0f} MiB")
        loads = list(sv.engine.loads.seconds)
        if loads:
            q = sorted(loads)
            print(f"  cold prompt load: p50 {statistics.median(q) * 1e3:.1f} ms, "
                  f"p95 {q[int(0.95 * (len(q) - 1))] * 1e3:.1f} ms, max {q[-1] * 1e3:.1f} ms over {len(q)} loads")


if __name__ == "__main__":
    main()
