"""kill -9 during pushes leaves the registry consistent: the old version keeps serving, no half artifact, and a
restarted `softprompt serve` has every pushed version."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from softprompt.serving.blobs import sha256_hex
from softprompt.serving.store_sqlite import SqliteStore
from tests.serving.conftest import expected_text, make_prompt, start
from tests.tiny import tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[2]
PUSHER = r"""
import sys, torch
import softprompt as sp
from softprompt.artifacts.io import serialize
from softprompt.serving.admin import LocalTasks
from softprompt.serving.store import open_store
store = open_store(sys.argv[1])
fp = store.base_fingerprint()
tasks = LocalTasks(store, "acme")  # validated against the registry's base fingerprint, as `softprompt push` does
config = sp.PromptTuningConfig(num_virtual_tokens=2048).to_dict()
i = int(sys.argv[2])
while True:
    i += 1
    embeds = torch.randn(2048, fp["hidden_size"], generator=torch.Generator().manual_seed(i))  # 256 KiB of tensors
    manifest, tensors = serialize("prompt_tuning", config, {"embeds": embeds}, fp, {"i": i})
    print(tasks.push("crash", manifest, tensors)["version"], flush=True)
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def push_until_killed(store_url: str, seed: int, pushes_before_kill: int, before_kill, watchdog_s: float) -> list[int]:
    """Run a PUSHER on `store_url`, read `pushes_before_kill` versions, call `before_kill(proc)` (it waits for the
    instant to strike), SIGKILL it; -> every version it reported as pushed (also those printed before it died)."""
    proc = subprocess.Popen([sys.executable, "-c", PUSHER, store_url, str(seed)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    watchdog = threading.Timer(watchdog_s, proc.kill)
    watchdog.start()
    pushed: list[int] = []
    try:
        while len(pushed) < pushes_before_kill:
            line = proc.stdout.readline()
            assert line, f"pusher died: {proc.stderr.read()[-2000:]}"
            pushed.append(int(line))
        before_kill(proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        pushed += [int(x) for x in proc.stdout.read().split()]
    finally:
        watchdog.cancel()
        proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return pushed


def _push_then_kill(registry: Path, seed: int, pushes_before_kill: int, mid_write: bool) -> list[int]:
    """Run a pusher, SIGKILL it after some pushes: as soon as its next artifact file is being written
    (`mid_write`), or at a random instant; -> versions it reported as pushed."""

    def strike(_proc) -> None:
        if mid_write:
            deadline = time.monotonic() + 10
            while not any((registry / "tmp").iterdir()) and time.monotonic() < deadline:
                time.sleep(0.0002)  # poll until a temp file of the next push exists
        else:
            time.sleep(random.uniform(0, 0.004))  # land somewhere inside the next push

    return push_until_killed(str(registry), seed, pushes_before_kill, strike, watchdog_s=60)


def _assert_consistent(registry: Path, pushed: list[int]) -> list[int]:
    store = SqliteStore(registry)
    assert store.check() == []  # SQLite integrity, and every version's two files present and intact
    for f in (registry / "blobs").rglob("*"):
        if f.is_file():  # no half file under a final name
            assert sha256_hex(f.read_bytes()) == f.name
    versions = [v["version"] for v in store.list_tasks("acme")[0]["versions"]]
    assert versions == list(range(1, len(versions) + 1))
    assert set(pushed) <= set(versions)
    assert len(versions) <= max(pushed) + 1  # at most the push that was killed after its commit
    return versions


def test_kill_9_mid_push_then_restart(tiny):
    with tempfile.TemporaryDirectory() as d:
        registry = Path(d) / "registry"
        s = start(tiny, registry)
        try:
            key = s.add_tenant("acme")
            s.push("acme", "crash", make_prompt(tiny, "prompt_tuning", seed=41), promote="prod")
            want = expected_text(tiny, s.prompts[("acme", "crash", 1)], "still here", 8)
            pushed: list[int] = []
            with s.client("acme") as c:
                for round_ in range(2):
                    pushed += _push_then_kill(registry, 1000 * (round_ + 1), 3 + round_, mid_write=round_ == 0)
                    if round_ == 0:  # the kill did interrupt a push: its temp file is left behind
                        assert any((registry / "tmp").iterdir())
                    versions = _assert_consistent(registry, [1, *pushed])
                    # the server never stopped and still serves the promoted version
                    r = c.post("/v1/completions", json={"model": "crash", "prompt": "still here", "max_tokens": 8,
                                                        "temperature": 0})
                    assert r.status_code == 200 and r.json()["model"] == "crash@1"
                    assert r.json()["choices"][0]["text"] == want
                    listed = c.get("/v1/tasks").json()["data"][0]["versions"]
                    assert [v["version"] for v in listed] == versions  # pushes from another process are visible
        finally:
            s.running.stop()

        # restart: a fresh `softprompt serve` process on the same registry has every version
        model_dir = Path(d) / "tiny-model"
        tiny_model("llama").save_pretrained(model_dir)
        tiny_tokenizer().save_pretrained(model_dir)
        proc = subprocess.Popen([sys.executable, "-m", "softprompt.cli.main", "serve", "--base", str(model_dir),
                                 "--registry", str(registry), "--port", "0", "--exit-after", "60",
                                 "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=_env(), cwd=ROOT)
        try:
            line = proc.stdout.readline()
            assert "serving" in line, proc.stderr.read()[-2000:]
            url = line.split(" on ")[1].split()[0]
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
                listed = [v["version"] for v in c.get("/v1/tasks").json()["data"][0]["versions"]]
                assert listed == versions
                r = c.post("/v1/completions", json={"model": "crash", "prompt": "still here", "max_tokens": 8,
                                                    "temperature": 0})
                assert r.json()["choices"][0]["text"] == want
                for v in (listed[-1], pushed[0]):
                    r = c.post("/v1/completions", json={"model": f"crash@{v}", "prompt": "x", "max_tokens": 2})
                    assert r.status_code == 200, r.text
        finally:
            proc.terminate()
            proc.wait(20)
            proc.stdout.close()
            proc.stderr.close()
