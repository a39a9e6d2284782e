"""Serving under open-loop load through real HTTP servers and the official `openai` client, side by side.

    python bench/bench_serving.py --base tiny --requests 6 --rates 2,4,8     # proves it runs (seconds)
    python bench/bench_serving.py --base smollm2 --dtype bf16 --requests 40 --rates 0.5,1.5,4

Every server is its own process on 127.0.0.1, serving the same local model directory; this process only sends
requests. Requests arrive as a Poisson process at each rate (seeded, the same arrivals for every server), with
prompts of varied length and max_tokens drawn from 4-128, greedy, streamed. Servers:

  softprompt mixed       `softprompt serve` (continuous scheduler): 8 tasks of mixed methods over 4 tenants,
                         plus bare rows (1 request in 9)
  softprompt static      the same traffic on `--scheduler static` (the previous dynamic batching)
  softprompt bare        `softprompt serve`, the bare model only
  transformers CB bare   `transformers serve --continuous-batching`, the bare model (skipped, with a message,
                         when `transformers serve` cannot start here)

Reported per server and rate: tokens/s (completion tokens over the span from the first arrival to the last
answer), TTFT p50/p95, inter-token latency p50/p95 (gaps between streamed chunks), end-to-end p95, errors.
Targets (at the highest rate): mixed tokens/s >= 1.0x transformers CB and >= 0.9x softprompt bare; mixed TTFT
p95 <= 2x transformers CB and <= 1/10 of static.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import machine, markdown_table  # noqa: F401 - sets sys.path for softprompt

import softprompt as sp
from softprompt.serving.admin import LocalTasks
from softprompt.serving.store import open_store

MIX = ("prompt_tuning", "prompt_tuning", "p_tuning", "prefix_tuning", "prefix_tuning", "deep_prompt", "deep_prompt",
       "adapter")
WORDS = ("the service answers every tenant with its own soft prompt while sharing one frozen model so that many "
         "tasks run together in each step of the scheduler").split()


def method_config(method: str, n: int, seed: int) -> Any:
    return sp.build_config(method, sp.Knobs(num_virtual_tokens=n, seed=seed))  # adapters take only the seed


def model_dir(args: argparse.Namespace, work: Path) -> Path:
    """A local Hugging Face directory every server loads (tiny: saved from code; else load_base's own cache)."""
    if args.base == "tiny":
        from tests.tiny import tiny_model, tiny_tokenizer

        d = work / "tiny-model"
        tiny_model("llama").save_pretrained(d)
        tiny_tokenizer().save_pretrained(d)
        return d
    if Path(args.base).is_dir():
        return Path(args.base)
    from softprompt.model.base import EMBEDDED, _gguf_cache_key, cache_dir, embedded_gguf

    if args.base not in EMBEDDED:
        raise SystemExit(f"--base {args.base!r}: give tiny, an embedded default or a local model directory")
    sp.load_base(args.base)  # dequantises once into the cache
    gguf = embedded_gguf(args.base)
    return cache_dir() / "models" / f"{gguf.stem}-{_gguf_cache_key(gguf)}"


def make_registry(directory: Path, registry: Path, args: argparse.Namespace) -> tuple[list[tuple[str, str]], dict]:
    """8 tasks over 4 tenants. -> [(tenant, task)], {tenant: api key}."""
    base = sp.load_base(str(directory), dtype=args.dtype)
    store = open_store(registry)
    store.bind_base(base.fingerprint)
    keys = {f"tenant{i}": store.create_tenant(f"tenant{i}") for i in range(4)}
    tasks = []
    for i, method in enumerate(MIX):
        tenant, task = f"tenant{i % 4}", f"{method.replace('_', '-')}-{i}"
        p = sp.attach(base, method_config(method, args.virtual_tokens, seed=i))
        LocalTasks(store, tenant, base=base).push(task, *p.to_bytes(), promote="prod")
        tasks.append((tenant, task))
    return tasks, keys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def start_softprompt(directory: Path, registry: Path, scheduler: str, args: argparse.Namespace, log: Path):
    port = free_port()
    cmd = [sys.executable, "-m", "softprompt.cli.main", "serve", "--registry", str(registry), "--base",
           str(directory), "--dtype", args.dtype, "--port", str(port), "--scheduler", scheduler,
           "--max-tokens-limit", "128", "--max-queue", "4096", "--max-batch-size", str(args.max_batch),
           "--kv-cache-bytes", str(args.kv_cache_bytes),
           "--log-level", "warning"]
    if args.device:
        cmd += ["--device", args.device]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    return proc, f"http://127.0.0.1:{port}"


def start_transformers(directory: Path, args: argparse.Namespace, log: Path):
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent)) or shutil.which("transformers")
    if exe is None:
        return None, "no `transformers` command (pip install 'transformers[serving]')"
    port = free_port()
    cmd = [exe, "serve", "--continuous-batching", "--host", "127.0.0.1", "--port", str(port),
           "--dtype", {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[args.dtype], str(directory)]
    if args.device:
        cmd += ["--device", args.device]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def workload(args: argparse.Namespace, rate: float, models: list[str], seed: int) -> list[dict]:
    """Poisson arrivals at `rate`/s, prompts of 4-64 words, max_tokens in [4, 128]; seeded (same for all)."""
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(args.requests):
        t += rng.expovariate(rate)
        n = rng.randint(4, 64)
        start = rng.randrange(len(WORDS))
        text = " ".join(WORDS[(start + k) % len(WORDS)] for k in range(n))
        out.append({"at": t, "prompt": text, "max_tokens": rng.randint(4, args.max_out), "model": rng.choice(models)})
    return out


async def one(client: Any, req: dict, t0: float) -> dict:
    """One streamed completion -> its arrival, first-token and end times, chunk gaps, tokens."""
    await asyncio.sleep(max(0.0, t0 + req["at"] - time.perf_counter()))
    sent = time.perf_counter()
    stamps, tokens, error = [], None, None
    try:
        stream = await client.completions.create(model=req["model"], prompt=req["prompt"], stream=True,
                                                 max_tokens=req["max_tokens"], temperature=0,
                                                 stream_options={"include_usage": True})
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].text:
                stamps.append(time.perf_counter())
            if getattr(chunk, "usage", None) is not None:
                tokens = chunk.usage.completion_tokens
    except Exception as e:  # noqa: BLE001 - counted, reported
        error = f"{type(e).__name__}: {e}"[:200]
    end = time.perf_counter()
    return {"sent": sent, "stamps": stamps, "end": end, "tokens": tokens if tokens is not None else len(stamps),
            "error": error}


async def drive(url: str, keys: dict[str, str], tenant_keys: list[str], reqs: list[dict]) -> list[dict]:
    """Send every request at its arrival time with its task owner's key (bare rows rotate over the tenants)."""
    import httpx
    import openai

    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    clients = {k: openai.AsyncOpenAI(base_url=url + "/v1", api_key=k, max_retries=0, timeout=600,
                                     http_client=httpx.AsyncClient(limits=limits, timeout=600))
               for k in {*keys.values(), *tenant_keys}}
    pick = [clients[keys[r["model"]]] if r["model"] in keys else clients[tenant_keys[i % len(tenant_keys)]]
            for i, r in enumerate(reqs)]
    t0 = time.perf_counter()
    return list(await asyncio.gather(*(one(c, r, t0) for c, r in zip(pick, reqs))))


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def summarize(results: list[dict]) -> dict:
    ok = [r for r in results if r["error"] is None]
    ttft = [r["stamps"][0] - r["sent"] for r in ok if r["stamps"]]
    itl = [b - a for r in ok for a, b in zip(r["stamps"], r["stamps"][1:])]
    e2e = [r["end"] - r["sent"] for r in ok]
    span = max(r["end"] for r in results) - min(r["sent"] for r in results)
    return {"tok/s": sum(r["tokens"] for r in ok) / span, "TTFT p50": pct(ttft, 0.5), "TTFT p95": pct(ttft, 0.95),
            "ITL p50": pct(itl, 0.5), "ITL p95": pct(itl, 0.95), "e2e p95": pct(e2e, 0.95),
            "errors": len(results) - len(ok), "first error": next((r["error"] for r in results if r["error"]), "")}


def run_server(name: str, start: Any, models: list[str], keys: dict[str, str], tenant_keys: list[str],
               args: argparse.Namespace, rates: list[float]) -> list[dict]:
    proc, url = start()
    if proc is None:
        print(f"  {name}: skipped ({url})", flush=True)
        return []
    rows = []
    try:
        if not wait_ready(url, proc, args.start_timeout):
            print(f"  {name}: skipped (the server did not come up within {args.start_timeout:.0f} s; see its log)",
                  flush=True)
            return []
        warm = [dict(r, at=0.0, max_tokens=4) for r in workload(args, 1.0, models, seed=99)[:4]]
        asyncio.run(drive(url, keys, tenant_keys, warm))  # loads prompts and warms allocators
        for rate in rates:
            reqs = workload(args, rate, models, seed=int(rate * 1000))
            s = summarize(asyncio.run(drive(url, keys, tenant_keys, reqs)))
            rows.append({"server": name, "rate/s": rate, **{k: (round(v, 3) if isinstance(v, float) else v)
                                                           for k, v in s.items()}})
            print(f"  {name} @ {rate}/s: {json.dumps(rows[-1])}", flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return rows


def targets(rows: list[dict], rate: float) -> list[str]:
    at = {r["server"]: r for r in rows if r["rate/s"] == rate}
    mixed = at.get("softprompt mixed")
    if mixed is None:
        return []
    out = []

    def check(label: str, other: str, key: str, want: str, bound: float) -> None:
        if other not in at:
            out.append(f"{label}: {other} did not run")
            return
        ratio = mixed[key] / at[other][key] if at[other][key] else float("nan")
        met = ratio >= bound if want == ">=" else ratio <= bound
        out.append(f"{label}: {ratio:.2f} (target {want} {bound}) {'met' if met else 'MISSED'}")

    check("mixed / transformers CB tokens/s", "transformers CB bare", "tok/s", ">=", 1.0)
    check("mixed / softprompt bare tokens/s", "softprompt bare", "tok/s", ">=", 0.9)
    check("mixed / transformers CB TTFT p95", "transformers CB bare", "TTFT p95", "<=", 2.0)
    check("mixed / static TTFT p95", "softprompt static", "TTFT p95", "<=", 0.1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="tiny", help="tiny (random, built in code), smollm2, or a local HF directory")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--device", default=None, help="torch device for every server (default: cpu)")
    ap.add_argument("--requests", type=int, default=40, help="requests per rate")
    ap.add_argument("--rates", default="0.5,1.5,4", help="arrival rates per second: below, near, above saturation")
    ap.add_argument("--max-out", type=int, default=128, help="max_tokens are drawn from [4, this]")
    ap.add_argument("--virtual-tokens", type=int, default=20)
    ap.add_argument("--max-batch", type=int, default=32, help="--max-batch-size of the softprompt servers")
    ap.add_argument("--kv-cache-bytes", type=int, default=512 << 20, help="KV pool of the continuous servers")
    ap.add_argument("--servers", default="mixed,static,bare,transformers")
    ap.add_argument("--start-timeout", type=float, default=300.0)
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    which = set(args.servers.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        directory = model_dir(args, work)
        tasks, keys = make_registry(directory, work / "registry", args)
        mixed_models = [t for _, t in tasks] + ["base"]
        print(f"# bench_serving on {machine()}\n# model {directory}, {args.requests} requests per rate, "
              f"rates {rates}, max_tokens 4-{args.max_out}", flush=True)
        rows: list[dict] = []
        plan = [("softprompt mixed", "mixed", lambda: start_softprompt(directory, work / "registry", "continuous",
                                                                        args, work / "mixed.log")),
                ("softprompt static", "static", lambda: start_softprompt(directory, work / "registry", "static",
                                                                          args, work / "static.log")),
                ("softprompt bare", "bare", lambda: start_softprompt(directory, work / "registry", "continuous",
                                                                      args, work / "bare.log")),
                ("transformers CB bare", "transformers", lambda: start_transformers(directory, args,
                                                                                     work / "transformers.log"))]
        for name, key, start in plan:
            if key not in which:
                continue
            models = mixed_models if key in ("mixed", "static") else (["base"] if key == "bare" else [str(directory)])
            by_model = {t: keys[tn] for tn, t in tasks}  # a task's requests carry its tenant's key
            rows += run_server(name, start, models, by_model, list(keys.values()), args, rates)
            if not rows or rows[-1]["server"] != name:
                log = work / f"{key}.log"
                if log.exists():
                    print("    last log lines: " + " | ".join(log.read_text().splitlines()[-5:]), flush=True)
        cols = ["server", "rate/s", "tok/s", "TTFT p50", "TTFT p95", "ITL p50", "ITL p95", "e2e p95", "errors"]
        print("\n" + markdown_table(rows, cols))
        for line in targets(rows, max(rates)):
            print("- " + line)
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
