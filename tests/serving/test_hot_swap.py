"""Promote and roll back while requests run: new requests switch within a second, in-flight ones finish on the
version they were admitted with, nothing is dropped."""

from __future__ import annotations

import json
import threading
import time

from tests.serving.conftest import expected_text, make_prompt, slowed

TEXT, N = "swap", 12


def _stream(client, model: str, started: threading.Event | None = None) -> tuple[str, str, float, float]:
    """(text, served model, time the first chunk arrived, time the stream ended)."""
    parts, served, first = [], "", 0.0
    with client.stream("POST", "/v1/completions", json={"model": model, "prompt": TEXT, "max_tokens": N,
                                                        "temperature": 0, "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            assert "error" not in obj, obj
            if not first:
                first = time.monotonic()
                if started is not None:
                    started.set()
            served = obj["model"]
            parts.append(obj["choices"][0]["text"])
    return "".join(parts), served, first, time.monotonic()


def test_promote_and_rollback_under_load(served):
    v1 = served.push("acme", "hot", make_prompt(served.base, "prefix_tuning", seed=31), promote="prod")
    v2 = served.push("acme", "hot", make_prompt(served.base, "prefix_tuning", seed=32))
    want = {f"hot@{v}": expected_text(served.base, served.prompts[("acme", "hot", v)], TEXT, N) for v in (v1, v2)}
    assert want[f"hot@{v1}"] != want[f"hot@{v2}"]

    results: list[tuple[float, str, str, float, float]] = []  # (sent, text, model, first chunk, end)
    errors: list = []
    stop = threading.Event()
    streaming = threading.Event()  # set when some request receives its first chunk

    def client_loop():
        with served.client("acme") as c:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    text, model, first, end = _stream(c, "hot", streaming)
                except Exception as e:  # noqa: BLE001 - any failure is a dropped request
                    errors.append(repr(e))
                    continue
                results.append((sent, text, model, first, end))

    with slowed(served, 0.02):  # ~0.25 s per request: promotions land while requests are mid-stream
        threads = [threading.Thread(target=client_loop) for _ in range(6)]
        for th in threads:
            th.start()
        time.sleep(0.6)
        with served.client("acme") as c:
            streaming.clear()
            assert streaming.wait(10)  # promote while requests are mid-stream
            t_promote = time.monotonic()
            assert c.post("/v1/tasks/hot/promote", json={"version": v2}).json()["previous"] == v1
            t_promoted = time.monotonic()
            time.sleep(0.8)
            t_rollback = time.monotonic()
            assert c.post("/v1/tasks/hot/rollback").json() == {"task": "hot", "alias": "prod", "version": v1,
                                                               "rolled_back_from": v2}
            t_rolled = time.monotonic()
        time.sleep(0.6)
        stop.set()
        for th in threads:
            th.join(30)

    assert errors == []
    assert len(results) >= 12
    for _, text, model, _, _ in results:
        assert text == want[model], (model, text)  # every answer is exactly one version's output, never a mix
    # in flight across the promotion (streaming before it started, still streaming after): finished on version 1
    crossing = [r for r in results if r[3] < t_promote and r[4] > t_promoted]
    assert crossing and all(r[2] == f"hot@{v1}" for r in crossing)
    # admitted after the promotion returned: version 2 (well within a second); after the rollback: version 1
    after_promote = [r for r in results if t_promoted < r[0] < t_rollback]
    assert after_promote and all(r[2] == f"hot@{v2}" for r in after_promote)
    after_rollback = [r for r in results if r[0] > t_rolled]
    assert after_rollback and all(r[2] == f"hot@{v1}" for r in after_rollback)
