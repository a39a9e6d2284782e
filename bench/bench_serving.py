"""Serving throughput: mixed traffic over 8 tasks vs the bare base model vs one task per batch, side by side.

    python bench/bench_serving.py                  # tiny random model (seconds)
    python bench/bench_serving.py --base smollm2   # the real embedded model

Every scenario runs the same requests through the serving engine (queue, dynamic batching, prompt table,
runner), with `--clients` requests outstanding at any time (closed loop), greedy decoding:

  bare         no prompts: the base model alone                      (mixed / bare   target >= 0.85)
  mixed        rows of 8 tasks (several methods) share every batch
  single_task  a batch only holds rows of one task (a server without mixed batches)  (mixed / single >= 3)

Every request generates exactly --max-tokens tokens (end-of-sequence ignored), so all scenarios do the same work.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import softprompt as sp  # noqa: E402
from softprompt.api.state import build_state  # noqa: E402
from softprompt.serving.config import ServeConfig  # noqa: E402
from softprompt.serving.engine import Job  # noqa: E402
from softprompt.serving.store import open_store  # noqa: E402

DEFAULT_MIX = "prompt_tuning,prompt_tuning,p_tuning,p_tuning,prefix_tuning,prefix_tuning,deep_prompt,deep_prompt"


def make_config(method: str, n: int, seed: int):
    return sp.build_config(method, sp.Knobs(num_virtual_tokens=n, seed=seed))  # adapters take only the seed


def load_base(name: str) -> sp.Base:
    if name == "tiny":
        from tests.tiny import tiny_base

        return tiny_base("llama")
    return sp.load_base(name)


def requests(base: sp.Base, n: int) -> list[list[int]]:
    words = "the service answers every tenant with its own soft prompt while sharing one frozen model".split()
    texts = [" ".join(words[i % 5: i % 5 + 6 + i % 7]) for i in range(n)]
    return base.encode(texts)


def run(engine, handles: list, prompts: list[list[int]], clients: int, max_tokens: int) -> tuple[float, int]:
    """Closed loop: `clients` requests outstanding; -> (seconds, tokens generated)."""
    lock = threading.Lock()
    done = threading.Event()
    state = {"next": 0, "finished": 0, "tokens": 0}

    def submit_next() -> None:
        with lock:
            i = state["next"]
            if i >= len(prompts):
                return
            state["next"] += 1
        job = Job(handles[i % len(handles)], prompts[i], max_tokens)
        job.future.add_done_callback(finished)
        engine.submit([job])

    def finished(f) -> None:
        with lock:
            state["finished"] += 1
            state["tokens"] += len(f.result().tokens)
            last = state["finished"] == len(prompts)
        if last:
            done.set()
        else:
            submit_next()

    t0 = time.perf_counter()
    for _ in range(min(clients, len(prompts))):
        submit_next()
    done.wait()
    return time.perf_counter() - t0, state["tokens"]


def make_engine(base: sp.Base, registry: Path, policy: str, args: argparse.Namespace):
    cfg = ServeConfig(max_batch_size=args.max_batch, batch_wait_ms=args.wait_ms, max_queue=4 * args.clients,
                      max_prompts_per_request=min(16, 4 * args.clients),
                      batch_policy=policy, max_tokens_limit=max(args.max_tokens, 16))
    state = build_state(base, registry, cfg)
    state.runner.ignore_eos = True  # every request generates max_tokens: the same work in every scenario
    state.engine.start()
    return state.engine


def measure(base: sp.Base, registry: Path, handles: list, prompts: list, args: argparse.Namespace) -> dict:
    """Best tokens/s of each scenario; timed runs interleaved so that machine noise hits all of them alike."""
    scenarios = {"bare": (make_engine(base, registry, "mixed", args), [None]),
                 "mixed": (make_engine(base, registry, "mixed", args), handles),
                 "single_task": (make_engine(base, registry, "single_task", args), handles)}
    best = dict.fromkeys(scenarios, 0.0)
    try:
        for engine, hs in scenarios.values():
            run(engine, hs, prompts[: args.clients], args.clients, 4)  # warm-up: prompt table, allocator
        for _ in range(args.repeats):
            for name, (engine, hs) in scenarios.items():
                seconds, tokens = run(engine, hs, prompts, args.clients, args.max_tokens)
                best[name] = max(best[name], tokens / seconds)
        for name, (engine, _) in scenarios.items():
            st = engine.stats
            print(f"  {name:<12} {best[name]:9.1f} tok/s   mean batch {st['rows'] / max(st['batches'], 1):5.1f} rows")
    finally:
        for engine, _ in scenarios.values():
            engine.stop()
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="tiny", help="'tiny' (random, built in code) or a load_base source: smollm2")
    ap.add_argument("--mix", default=DEFAULT_MIX, help="comma-separated methods of the 8 tasks")
    ap.add_argument("--virtual-tokens", type=int, default=20)
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--clients", type=int, default=32, help="requests outstanding at any time")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--wait-ms", type=float, default=5.0)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per scenario, interleaved (best is kept)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 for tiny, torch's default)")
    args = ap.parse_args()
    if args.threads or args.base == "tiny":
        torch.set_num_threads(args.threads or 1)

    base = load_base(args.base)
    methods = args.mix.split(",")
    prompts = requests(base, args.requests)
    with tempfile.TemporaryDirectory() as d:
        registry = Path(d) / "registry"
        store = open_store(registry)
        store.bind_base(base.fingerprint)
        store.create_tenant("bench")
        handles = []
        for i, m in enumerate(methods):
            manifest, tensors = sp.attach(base, make_config(m, args.virtual_tokens, seed=i)).to_bytes()
            store.push("bench", f"task{i}", manifest, tensors, m)
            handles.append(store.resolve("bench", f"task{i}")[0])
        print(f"base={args.base} tasks={len(methods)} ({args.mix}) virtual_tokens={args.virtual_tokens} "
              f"requests={args.requests} clients={args.clients} max_batch={args.max_batch} "
              f"max_tokens={args.max_tokens} threads={torch.get_num_threads()}")
        best = measure(base, registry, handles, prompts, args)
    bare, mixed, single = best["bare"], best["mixed"], best["single_task"]
    print(f"mixed / bare   = {mixed / bare:5.2f}x  (target >= 0.85)  {'OK' if mixed / bare >= 0.85 else 'BELOW'}")
    print(f"mixed / single = {mixed / single:5.2f}x  (target >= 3)     {'OK' if mixed / single >= 3 else 'BELOW'}")


if __name__ == "__main__":
    main()
