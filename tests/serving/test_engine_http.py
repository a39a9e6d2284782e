"""The continuous engine behind the real HTTP server: a client that goes away frees its row and KV, a small KV pool
makes requests wait (429 only past the queue limit), limits answer a clear 4xx, and /metrics shows the step loop."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import TASK_EXTRA, make_prompt, slowed, start


def _wait_for(cond, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_a_client_that_disconnects_frees_its_row_and_kv(tiny):
    with tempfile.TemporaryDirectory() as d:
        s = start(tiny, Path(d))
        try:
            s.add_tenant("t")
            s.push("t", "dp", make_prompt(tiny, "deep_prompt", seed=70, n=4))
            engine = s.state.engine
            s.state.runner.ignore_eos = True  # the row would run all 250 steps
            with slowed(s, 0.01), s.client("t") as c:
                body = {"model": "dp", "prompt": "stream then leave", "max_tokens": 250, "stream": True,
                        "temperature": 0}
                with c.stream("POST", "/v1/completions", json=body) as r:
                    chunks = r.iter_lines()
                    got = [next(chunks) for _ in range(4)]
                    assert engine.running_rows() == 1 and engine.pool.used_blocks > 0
                # the connection is closed here, long before 250 tokens
                assert _wait_for(lambda: engine.running_rows() == 0 and engine.pool.used_blocks == 0)
                steps_left = engine.steps
                metrics = c.get("/metrics").text
        finally:
            s.running.stop()
    assert any(line.startswith("data: ") for line in got)
    assert steps_left < 200  # the row stopped early instead of running to max_tokens
    for name in ("softprompt_running_rows", "softprompt_queue_depth", "softprompt_kv_blocks_used",
                 "softprompt_kv_blocks_total", "softprompt_step_seconds_bucket", "softprompt_kv_bytes_per_token",
                 "softprompt_kv_row_bytes_bucket", "softprompt_kv_prefix_bytes", "softprompt_prompt_load_seconds"):
        assert name in metrics, name


def test_a_small_kv_pool_queues_requests_and_429_only_past_the_queue_limit(tiny):
    with tempfile.TemporaryDirectory() as d:
        # 16 KiB of KV at 256 bytes per token: 64 tokens, so two rows of ~30 tokens at a time
        s = start(tiny, Path(d), kv_cache_bytes=16 << 10, kv_block_size=4, max_queue=6, max_prompts_per_request=6,
                  max_batch_size=8)
        try:
            key = s.add_tenant("t")

            async def burst():
                async with httpx.AsyncClient(base_url=s.url, timeout=60,
                                             headers={"Authorization": f"Bearer {key}"}) as c:
                    return await asyncio.gather(*(c.post("/v1/completions", json={
                        "model": "base", "prompt": f"q{i}", "max_tokens": 20, "temperature": 0})
                        for i in range(16)))

            with slowed(s, 0.005):
                responses = asyncio.run(burst())
            with s.client("t") as c:
                too_long = c.post("/v1/completions", json={"model": "base", "prompt": "x" * 40, "max_tokens": 200})
                after = c.post("/v1/completions", json={"model": "base", "prompt": "after", "max_tokens": 3})
            engine = s.state.engine
        finally:
            s.running.stop()
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429} and statuses.count(200) >= 6, statuses
    assert engine.stats["max_rows"] <= 2  # never more rows than the pool holds
    assert too_long.status_code == 400
    msg = too_long.json()["error"]["message"]
    assert "KV tokens" in msg and "max_tokens" in msg
    assert after.status_code == 200


def test_a_request_with_too_many_rows_gets_a_clear_400(tiny):
    with tempfile.TemporaryDirectory() as d:
        s = start(tiny, Path(d), max_request_rows=8)
        try:
            s.add_tenant("t")
            s.push("t", "cls", make_prompt(tiny, "prompt_tuning", seed=71, n=4), **TASK_EXTRA)
            with s.client("t") as c:
                ok = c.post("/v1/classify", json={"model": "cls", "input": ["one", "two"]})  # 2 x 4 words
                wide = c.post("/v1/classify", json={"model": "cls", "input": ["a", "b", "c"]})  # 12 rows
        finally:
            s.running.stop()
    assert ok.status_code == 200, ok.text
    assert wide.status_code == 400
    msg = wide.json()["error"]["message"]
    assert "12 rows" in msg and "at most 8" in msg


@pytest.mark.parametrize("scheduler", ["static", "continuous"])
def test_both_schedulers_serve_the_same_greedy_text(tiny, scheduler):
    with tempfile.TemporaryDirectory() as d:
        s = start(tiny, Path(d), scheduler=scheduler)
        try:
            s.add_tenant("t")
            s.push("t", "pt", make_prompt(tiny, "prompt_tuning", seed=72, n=4))
            with s.client("t") as c:
                r = c.post("/v1/completions", json={"model": "pt", "prompt": "same", "max_tokens": 8,
                                                    "temperature": 0, "stop": ["zz"]})
        finally:
            s.running.stop()
    from tests.serving.conftest import expected_text

    assert r.status_code == 200
    want = expected_text(tiny, s.prompts[("t", "pt", 1)], "same", 8)
    assert r.json()["choices"][0]["text"] == want.split("zz")[0]


def test_a_non_streaming_client_that_gives_up_frees_its_row_and_kv(tiny):
    with tempfile.TemporaryDirectory() as d:
        s = start(tiny, Path(d))
        try:
            s.add_tenant("t")
            engine = s.state.engine
            s.state.runner.ignore_eos = True  # the row would run all 250 steps
            with slowed(s, 0.02):
                with s.client("t") as c, pytest.raises(httpx.ReadTimeout):
                    c.post("/v1/completions", json={"model": "base", "prompt": "wait for me", "max_tokens": 250},
                           timeout=1.0)  # 250 steps of 20 ms: far longer than the client waits
                freed = _wait_for(lambda: engine.running_rows() == 0 and engine.pool.used_blocks == 0)
                steps = engine.steps
        finally:
            s.running.stop()
    assert freed and steps < 200
