"""Two server replicas on 127.0.0.1 sharing one PostgreSQL store: a promote through one is served by the other
within a second, under load, across lost connections and a database restart."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from softprompt.serving.store_postgres import PostgresStore
from tests.serving.conftest import Served, expected_text, make_prompt, start
from tests.tiny import tiny_base

ROOT = Path(__file__).resolve().parents[2]
TEXT, N = "replica", 6
T = TypeVar("T")
BOUND_S = 5.0
"""The assertion bound for propagation: generous on a loaded machine; the SLO (1 s) is what is measured."""


def _replicas(tiny, url: str, recheck_s: float) -> tuple[Served, Served]:
    """Replica A on the package's tiny model, B on its own copy (each replica has its own model and table)."""
    a = start(tiny, PostgresStore(url, recheck_s=recheck_s), max_batch_size=16, max_queue=512)
    b = start(tiny_base("llama"), PostgresStore(url, recheck_s=recheck_s), max_batch_size=16, max_queue=512)
    b.keys = a.keys  # one store: the same tenants and keys
    return a, b


@pytest.fixture
def replicas(tiny, pg_url) -> Iterator[tuple[Served, Served]]:
    a, b = _replicas(tiny, pg_url, recheck_s=30.0)  # a long re-check: only a notification is fast
    a.add_tenant("acme")
    try:
        yield a, b
    finally:
        a.running.stop()
        b.running.stop()


def _push_http(served: Served, task: str, prompt, promote: str | None = None) -> int:
    """Push through the replica's HTTP API, as a team's CI job would."""
    manifest, tensors = prompt.to_bytes()
    with served.client("acme") as c:
        r = c.post(f"/v1/tasks/{task}/versions", params={"promote": promote} if promote else None,
                   files={"manifest": ("manifest.json", manifest), "tensors": ("prompt.safetensors", tensors)})
    assert r.status_code == 201, r.text
    return r.json()["version"]


def _complete(client, model: str) -> tuple[int, str, str]:
    r = client.post("/v1/completions", json={"model": model, "prompt": TEXT, "max_tokens": N, "temperature": 0})
    body = r.json()
    if r.status_code != 200:
        return r.status_code, "", body["error"]["message"]
    return 200, body["model"], body["choices"][0]["text"]


def _wait_for_change(served: Served, since: int, timeout: float, remote_only: bool = False) -> tuple[float, str]:
    """The first invalidation after `since` changes (with `remote_only`, the first not made by this replica's own
    writes): (monotonic time, reason)."""
    store = served.state.store

    def first() -> tuple[float, str] | None:
        return next((c for c in store.changes[since:] if not remote_only or c[1] != "write"), None)

    with store.changed:
        assert store.changed.wait_for(lambda: first() is not None, timeout), "no change arrived"
        return first()


def _settled(replicas: tuple[Served, ...], change: Callable[[], T]) -> T:
    """Make a change and wait until every replica's watch has heard of it, so no late notification empties a
    replica's memory after the test has filled it."""
    since = [len(s.state.store.changes) for s in replicas]
    out = change()
    for s, n in zip(replicas, since):
        _wait_for_change(s, n, BOUND_S, remote_only=True)
    return out


def _served_within(served: Served, model: str, want_model: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    with served.client("acme") as c:
        while True:
            status, got, _ = _complete(c, model)
            if status == 200 and got == want_model:
                return time.monotonic()
            assert time.monotonic() < deadline, f"{want_model} not served within {timeout} s (got {got})"
            time.sleep(0.01)


def test_push_and_promote_on_a_are_served_by_b(replicas):
    a, b = replicas
    prompts = {v: make_prompt(a.base, "prompt_tuning", seed=60 + v) for v in (1, 2)}
    want = {v: expected_text(a.base, p, TEXT, N) for v, p in prompts.items()}
    assert want[1] != want[2]
    assert _settled((a, b), lambda: _push_http(a, "hot", prompts[1], promote="prod")) == 1
    with b.client("acme") as c:
        assert _complete(c, "hot") == (200, "hot@1", want[1])  # B resolved it (and now remembers it)
    assert _settled((a, b), lambda: _push_http(a, "hot", prompts[2])) == 2  # the next change B hears: the promote
    seen_before = len(b.state.store.changes)
    t_sent = time.monotonic()
    with a.client("acme") as c:
        assert c.post("/v1/tasks/hot/promote", json={"version": 2}).json()["previous"] == 1
    t_promoted = time.monotonic()
    with a.client("acme") as c:
        assert _complete(c, "hot")[1] == "hot@2"  # the replica that promoted: at once
    t_seen, reason = _wait_for_change(b, seen_before, BOUND_S)
    t_served = _served_within(b, "hot", "hot@2", BOUND_S)
    assert reason == "notify"  # delivered by LISTEN/NOTIFY (the re-check is 30 s away)
    with b.client("acme") as c:
        assert _complete(c, "hot") == (200, "hot@2", want[2])
        assert _complete(c, "hot@1") == (200, "hot@1", want[1])  # versions stay addressable
    # from the command line, against the database: both replicas follow
    from softprompt.cli.main import main

    url = a.state.store.backend.url
    assert main(["rollback", "hot", "--store", url, "--tenant", "acme"]) == 0
    for s in (a, b):
        _served_within(s, "hot", "hot@1", BOUND_S)
    print(f"\npropagation A->B (from sending the promote to A, which took {1000 * (t_promoted - t_sent):.1f} ms): "
          f"B notified after {1000 * (t_seen - t_sent):.1f} ms, B served the new version after "
          f"{1000 * (t_served - t_sent):.1f} ms (SLO 1000 ms)")


def test_64_clients_over_both_replicas_see_no_error_during_a_promote(replicas):
    a, b = replicas
    prompts = {v: make_prompt(a.base, "deep_prompt", seed=70 + v, n=4) for v in (1, 2)}
    want = {f"load@{v}": expected_text(a.base, p, TEXT, N) for v, p in prompts.items()}
    _settled((a, b), lambda: _push_http(a, "load", prompts[1], promote="prod"))
    _settled((a, b), lambda: _push_http(b, "load", prompts[2]))
    results: list[tuple[str, float, str, str]] = []  # (replica, time sent, model, text)
    errors: list[str] = []
    stop = threading.Event()

    def client_loop(served: Served, name: str) -> None:
        with served.client("acme") as c:
            for _ in range(40):  # bounded in count; the stop event ends it sooner
                if stop.is_set():
                    return
                sent = time.monotonic()
                try:
                    status, model, text = _complete(c, "load")
                except Exception as e:  # noqa: BLE001 - any failure is an error
                    errors.append(repr(e))
                    continue
                if status != 200:
                    errors.append(f"{name}: HTTP {status} {text}")
                    continue
                results.append((name, sent, model, text))

    threads = [threading.Thread(target=client_loop, args=((a, "A") if i % 2 else (b, "B"))) for i in range(64)]
    for th in threads:
        th.start()
    try:
        deadline = time.monotonic() + 120
        while not all(sum(r[0] == n for r in list(results)) >= 16 for n in "AB"):  # both replicas under load
            assert time.monotonic() < deadline and all(th.is_alive() for th in threads), ("the load did not start",
                                                                                         errors[:3])
            time.sleep(0.02)
        since = {name: len(s.state.store.changes) for name, s in (("A", a), ("B", b))}
        with a.client("acme") as c:
            assert c.post("/v1/tasks/load/promote", json={"version": 2}).status_code == 200
        changed = {"A": _wait_for_change(a, since["A"], BOUND_S)[0],
                   "B": _wait_for_change(b, since["B"], BOUND_S, remote_only=True)[0]}
        deadline = time.monotonic() + 120
        while not all(any(r[0] == n and r[1] > changed[n] for r in list(results)) for n in "AB"):
            assert time.monotonic() < deadline and any(th.is_alive() for th in threads), "no load after the promote"
            time.sleep(0.05)
    finally:
        stop.set()
        for th in threads:
            th.join(60)
    assert errors == []
    for name, _, model, text in results:
        assert text == want[model], (name, model)  # every answer is exactly one version's output
    for n in "AB":
        mine = [r for r in results if r[0] == n]
        assert {r[2] for r in mine} == {"load@1", "load@2"}  # both versions served by both replicas
        assert all(r[2] == "load@2" for r in mine if r[1] > changed[n])  # after the change: the new version
    print(f"\n64 clients: {len(results)} requests over two replicas, 0 errors")


def test_a_missed_notification_heals_by_the_periodic_recheck(tiny, pg_cluster, pg_url):
    a, b = _replicas(tiny, pg_url, recheck_s=0.5)
    try:
        a.add_tenant("acme")
        for seed in (1, 2):
            prompt = make_prompt(a.base, "prompt_tuning", seed=80 + seed)
            _settled((a, b), lambda p=prompt, s=seed: _push_http(a, "heal", p, promote="prod" if s == 1 else None))
        with b.client("acme") as c:
            assert _complete(c, "heal")[1] == "heal@1"
        since = len(b.state.store.changes)
        # an alias moved without a notification (as if the NOTIFY were lost on the way)
        pg_cluster.sql("UPDATE aliases SET version = 2; UPDATE changes SET generation = generation + 1",
                       db=pg_cluster.db_name(pg_url))
        assert _wait_for_change(b, since, BOUND_S)[1] == "recheck"
        _served_within(b, "heal", "heal@2", BOUND_S)
    finally:
        a.running.stop()
        b.running.stop()


def test_replicas_keep_serving_through_a_database_restart_and_lost_connections(replicas, pg_cluster, pg_url):
    a, b = replicas
    prompts = {v: make_prompt(a.base, "prefix_tuning", seed=90 + v) for v in (1, 2, 3)}
    want = {v: expected_text(a.base, p, TEXT, N) for v, p in prompts.items()}
    for v in (1, 2, 3):
        _settled((a, b), lambda v=v: _push_http(a, "kept", prompts[v], promote="prod" if v == 1 else None))
    for s in (a, b):
        with s.client("acme") as c:
            assert _complete(c, "kept") == (200, "kept@1", want[1])
    pg_cluster.stop()
    try:
        for s in (a, b):
            with s.client("acme") as c:
                for _ in range(3):  # the versions each replica has keep serving
                    assert _complete(c, "kept") == (200, "kept@1", want[1])
                status, _, message = _complete(c, "kept@2")  # one it never resolved cannot be
                assert status == 503 and "cannot reach the PostgreSQL store" in message, message
                assert c.get("/health").status_code == 200
    finally:
        pg_cluster.start()
    with a.client("acme") as c:  # a client retries a 503 (Retry-After: 1) until A has reconnected
        deadline = time.monotonic() + BOUND_S
        while (r := c.post("/v1/tasks/kept/promote", json={"version": 2})).status_code == 503:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.1)
        assert r.status_code == 200, r.text
    _served_within(b, "kept", "kept@2", BOUND_S)  # B's watch reconnected and heard of it
    with b.client("acme") as c:
        assert _complete(c, "kept@3") == (200, "kept@3", want[3])

    assert pg_cluster.terminate_backends(pg_url) >= 2  # every connection of both replicas, as a failover would
    with b.client("acme") as c:
        assert _complete(c, "kept") == (200, "kept@2", want[2])
    with a.client("acme") as c:
        assert c.post("/v1/tasks/kept/promote", json={"version": 3}).status_code == 200
    _served_within(b, "kept", "kept@3", BOUND_S)


def test_a_replica_started_while_the_database_is_down_fails_clearly():
    with tempfile.TemporaryDirectory() as d:  # a socket folder where no server listens
        url = f"postgresql://postgres:hunter2@/softprompt?host={d}"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for argv in (["serve", "--store", url, "--base", "smollm2", "--port", "0"], ["tenant", "list", "--store", url]):
            done = subprocess.run([sys.executable, "-m", "softprompt.cli.main", *argv], capture_output=True,
                                  text=True, env=env, cwd=ROOT, timeout=120)
            assert done.returncode == 2, done.stderr
            assert "Traceback" not in done.stderr
            assert "cannot reach the PostgreSQL store postgresql://postgres:***@/softprompt" in done.stderr, done.stderr
            assert "hunter2" not in done.stderr  # the password never shows
            assert "start the database, or fix the --store URL" in done.stderr
