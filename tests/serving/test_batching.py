"""Mixed batches are correct; many concurrent clients get answers; a full queue answers 429."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import METHODS, expected_text, make_prompt, record_batches, slowed, start
from tests.tiny import tiny_base

TEXTS = ["hello", "mixed batch", "abc xyz", "42"]


@pytest.mark.parametrize("soft_prefix_cache", [False, True])
def test_mixed_batch_rows_match_generating_alone(tiny, soft_prefix_cache):
    with tempfile.TemporaryDirectory() as d:
        s = start(tiny, Path(d), max_batch_size=32, batch_wait_ms=400, soft_prefix_cache=soft_prefix_cache)
        try:
            s.add_tenant("t")
            for i, m in enumerate(METHODS):
                s.push("t", m, make_prompt(tiny, m, seed=20 + i))
            seen = record_batches(s)
            jobs = [(m, t) for m in (*METHODS, "base") for t in TEXTS]

            async def all_at_once():
                async with httpx.AsyncClient(base_url=s.url, headers={"Authorization": f"Bearer {s.keys['t']}"},
                                             timeout=60) as c:
                    rs = await asyncio.gather(*(c.post("/v1/completions", json={
                        "model": m, "prompt": t, "max_tokens": 10, "temperature": 0}) for m, t in jobs))
                return dict(zip(jobs, rs))

            results = asyncio.run(all_at_once())
        finally:
            s.running.stop()
    for (model, text), r in results.items():
        assert r.status_code == 200, r.text
        prompt = None if model == "base" else s.prompts[("t", model, 1)]
        assert r.json()["choices"][0]["text"] == expected_text(tiny, prompt, text, 10), (model, text)
    assert len(results) == len(jobs)
    # the rows really shared batches: some batch held rows of several methods and rows with no prompt
    kinds = [{None if p is None else ("kv" if p.kv is not None else "adapter" if p.adapter is not None else "embeds")
              for p in batch} for batch in seen]
    assert max(len(b) for b in seen) >= 8
    # with the soft-prefix cache, prompt-tuning and P-tuning rows arrive as K/V prefixes computed once
    want = {None, "kv", "adapter"} | (set() if soft_prefix_cache else {"embeds"})
    assert any(want <= k for k in kinds), kinds
    assert soft_prefix_cache or any("embeds" in k for k in kinds)


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _client_loop(url: str, key: str, i: int, rounds: int, errors: list) -> int:
    models = [*METHODS, "base", "pt", "pt@1"]
    done = 0
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120) as c:
        for r_ in range(rounds):
            model = models[(i + r_) % len(models)]
            kind = (i + r_) % 4
            if kind == 0:
                r = await c.post("/v1/chat/completions", json={"model": model, "max_tokens": 6, "temperature": 0,
                                                               "messages": [{"role": "user", "content": f"hi {i}"}]})
            elif kind == 1:
                r = await c.post("/v1/classify", json={"model": "cls", "input": [f"text {i}", "good"]})
            elif kind == 2:
                async with c.stream("POST", "/v1/completions", json={"model": model, "prompt": f"s{i}", "stream": True,
                                                                     "max_tokens": 6}) as r:
                    body = "".join([x async for x in r.aiter_text()])
                if r.status_code != 200 or not body.endswith("data: [DONE]\n\n"):
                    errors.append((r.status_code, body[-200:]))
                done += 1
                continue
            else:
                r = await c.post("/v1/completions", json={"model": model, "prompt": f"load {i}", "max_tokens": 6})
            if r.status_code != 200:
                errors.append((r.status_code, r.text))
            done += 1
    return done


def _load(url: str, key: str, clients: int, rounds: int) -> tuple[int, list]:
    errors: list = []

    async def main():
        return await asyncio.gather(*(_client_loop(url, key, i, rounds, errors) for i in range(clients)))

    return sum(asyncio.run(main())), errors


def test_64_concurrent_clients_no_errors_bounded_memory(served):
    key = served.keys["acme"]
    done, errors = _load(served.url, key, 64, 1)  # warm-up: caches, allocator pools
    assert errors == [] and done == 64
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    done, errors = _load(served.url, key, 64, 3)
    elapsed = time.perf_counter() - t0
    growth = _rss_mb() - rss0
    assert errors == [], errors[:3]
    assert done == 192
    assert growth < 60, f"RSS grew {growth:.0f} MB over 192 requests"
    assert served.state.engine.stats["max_rows"] > 1  # requests were batched
    assert elapsed < 60


def test_queue_limit_answers_429_and_health_stays_responsive():
    base = tiny_base("llama")
    with tempfile.TemporaryDirectory() as d:
        s = start(base, Path(d), max_batch_size=2, max_queue=4, max_prompts_per_request=4, batch_wait_ms=0)
        try:
            s.add_tenant("t")

            async def burst():
                async with httpx.AsyncClient(base_url=s.url, timeout=60,
                                             headers={"Authorization": f"Bearer {s.keys['t']}"}) as c:
                    calls = [asyncio.ensure_future(c.post("/v1/completions", json={
                        "model": "base", "prompt": f"q{i}", "max_tokens": 8})) for i in range(24)]
                    await asyncio.sleep(0.2)
                    t0 = time.perf_counter()  # the event loop answers while the model thread is busy
                    health = await c.get("/health")
                    health_s = time.perf_counter() - t0
                    return await asyncio.gather(*calls), health, health_s

            with slowed(s, 0.01):
                responses, health, health_s = asyncio.run(burst())
            with s.client("t") as c:
                after = c.post("/v1/completions", json={"model": "base", "prompt": "after", "max_tokens": 2})
                metrics = c.get("/metrics").text
        finally:
            s.running.stop()
    statuses = [r.status_code for r in responses]
    assert health.status_code == 200 and health_s < 0.5
    assert sorted(set(statuses)) == [200, 429], statuses
    assert statuses.count(200) >= 4
    for r in responses:
        if r.status_code == 429:
            assert r.headers["retry-after"] == "1" and "busy" in r.json()["error"]["message"]
    assert after.status_code == 200
    assert 'softprompt_rejected_total{reason="queue_full"}' in metrics


def test_a_seeded_request_samples_the_same_text_whatever_shares_its_batch(tiny):
    with tempfile.TemporaryDirectory() as d:
        s = start(tiny, Path(d), max_batch_size=32, batch_wait_ms=400)
        try:
            s.add_tenant("t")
            s.push("t", "pt", make_prompt(tiny, "prompt_tuning", seed=60))
            batches = record_batches(s)
            body = {"model": "pt", "prompt": "abc", "max_tokens": 12, "temperature": 1.0, "seed": 7, "n": 3}

            async def run(bodies):
                async with httpx.AsyncClient(base_url=s.url, headers={"Authorization": f"Bearer {s.keys['t']}"},
                                             timeout=60) as c:
                    rs = await asyncio.gather(*(c.post("/v1/completions", json=b) for b in bodies))
                return [[ch["text"] for ch in r.json()["choices"]] for r in rs]

            alone = asyncio.run(run([body]))[0]
            crowd = [dict(body, prompt=f"other {i}", seed=100 + i) for i in range(6)] + [dict(body, seed=None)]
            together = asyncio.run(run([*crowd[:3], body, *crowd[3:]]))[3]
        finally:
            s.running.stop()
    sizes = [len(b) for b in batches]
    assert sizes[0] == 3 and max(sizes) > 3  # the second time the request really shared a batch
    assert together == alone
    assert len(set(alone)) == 3  # the n choices sample with different seeds
