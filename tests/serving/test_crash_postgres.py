"""kill -9 on the PostgreSQL store: of a pusher, and of a whole `softprompt serve` replica, each in the middle of
its push transaction. No half version is ever visible, no stray bytes are left, and the other replica keeps
serving and sees every version whose push returned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx

from softprompt.serving.store_postgres import PostgresStore
from tests.serving.conftest import expected_text, make_prompt, start
from tests.serving.test_crash import ROOT, _env, push_until_killed
from tests.tiny import tiny_model, tiny_tokenizer


def _with_app_name(url: str, name: str) -> str:
    return f"{url}&application_name={name}"


def _wait_in_transaction(cluster, url: str, app: str, proc: subprocess.Popen, timeout: float = 20) -> bool:
    """Poll until a connection named `app` is inside a write transaction (it holds a transaction id: a push in
    flight); False if none showed."""
    import psycopg

    deadline = time.monotonic() + timeout
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        while time.monotonic() < deadline and proc.poll() is None:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname=%s AND application_name=%s "
                               "AND backend_xid IS NOT NULL", (cluster.db_name(url), app)).fetchone()
            if row[0]:
                return True
    return False


def _assert_consistent(cluster, url: str, pushed: list[int]) -> list[int]:
    store = PostgresStore(url)
    assert store.check() == []  # every version's two blobs present and matching their sha256
    stray = cluster.sql("SELECT count(*) FROM blobs WHERE sha256 NOT IN "
                        "(SELECT digest FROM versions UNION SELECT tensors_sha256 FROM versions)",
                        db=cluster.db_name(url))
    assert stray == [(0,)]  # no bytes of a push that did not commit
    versions = [v["version"] for v in store.list_tasks("acme")[0]["versions"]]
    assert versions == list(range(1, len(versions) + 1))
    assert set(pushed) <= set(versions)
    assert len(versions) <= max(pushed) + 1  # at most the push that was killed after its commit
    store.close()
    return versions


def test_kill_9_pushers_mid_transaction(tiny, pg_cluster, pg_url):
    s = start(tiny, pg_url)
    try:
        s.add_tenant("acme")
        s.push("acme", "crash", make_prompt(tiny, "prompt_tuning", seed=41), promote="prod")
        want = expected_text(tiny, s.prompts[("acme", "crash", 1)], "still here", 8)
        pushed = [1]
        killed_mid_transaction = 0
        with s.client("acme") as c:
            for round_ in range(2):
                app = f"pusher{round_}"

                def strike(proc, app=app) -> None:
                    nonlocal killed_mid_transaction
                    killed_mid_transaction += _wait_in_transaction(pg_cluster, pg_url, app, proc)

                pushed += push_until_killed(_with_app_name(pg_url, app), 1000 * (round_ + 1), 2 + round_, strike,
                                            watchdog_s=90)
                versions = _assert_consistent(pg_cluster, pg_url, pushed)
                r = c.post("/v1/completions", json={"model": "crash", "prompt": "still here", "max_tokens": 8,
                                                    "temperature": 0})
                assert r.status_code == 200 and r.json()["model"] == "crash@1"  # the replica never stopped
                assert r.json()["choices"][0]["text"] == want
                listed = c.get("/v1/tasks").json()["data"][0]["versions"]
                assert [v["version"] for v in listed] == versions
        assert killed_mid_transaction == 2  # every kill landed inside a push transaction
    finally:
        s.running.stop()


def test_kill_9_of_a_replica_mid_push(tiny, pg_cluster, pg_url, tmp_path):
    """A real `softprompt serve --store postgresql://...` process, killed while it commits a pushed version."""
    b = start(tiny, pg_url)  # the replica that survives
    key = b.add_tenant("acme")
    model_dir = tmp_path / "tiny-model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    proc = subprocess.Popen([sys.executable, "-m", "softprompt.cli.main", "serve", "--base", str(model_dir),
                             "--store", _with_app_name(pg_url, "replicaA"), "--port", "0", "--exit-after", "120",
                             "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=ROOT)
    pushed: list[int] = []
    errors: list[str] = []
    stop = threading.Event()
    try:
        line = proc.stdout.readline()
        assert "serving" in line and "(store postgresql://" in line, proc.stderr.read()[-2000:]
        url = line.split(" on ")[1].split()[0]

        def pusher() -> None:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
                for i in range(200):
                    if stop.is_set():
                        return
                    m, t = make_prompt(tiny, "prompt_tuning", seed=500 + i, n=512).to_bytes()
                    try:
                        r = c.post("/v1/tasks/crash/versions",
                                   files={"manifest": ("manifest.json", m), "tensors": ("prompt.safetensors", t)})
                    except httpx.HTTPError:
                        return  # the replica was killed
                    if r.status_code != 201:
                        errors.append(r.text)
                        return
                    pushed.append(r.json()["version"])

        th = threading.Thread(target=pusher)
        th.start()
        deadline = time.monotonic() + 60
        while len(pushed) < 3 and time.monotonic() < deadline and th.is_alive():
            time.sleep(0.01)
        assert len(pushed) >= 3, errors
        assert _wait_in_transaction(pg_cluster, pg_url, "replicaA", proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        stop.set()
        th.join(30)
    finally:
        stop.set()
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    try:
        assert errors == []
        versions = _assert_consistent(pg_cluster, pg_url, pushed)
        with b.client("acme") as c:  # the surviving replica sees every version and can push the next one
            listed = [v["version"] for v in c.get("/v1/tasks").json()["data"][0]["versions"]]
            assert listed == versions
            m, t = make_prompt(tiny, "prompt_tuning", seed=9, n=2).to_bytes()
            r = c.post("/v1/tasks/crash/versions", params={"promote": "prod"},
                       files={"manifest": ("manifest.json", m), "tensors": ("prompt.safetensors", t)})
            assert r.status_code == 201 and r.json()["version"] == versions[-1] + 1
            r = c.post("/v1/completions", json={"model": "crash", "prompt": "x", "max_tokens": 2})
            assert r.status_code == 200 and r.json()["model"] == f"crash@{versions[-1] + 1}"
    finally:
        b.running.stop()

