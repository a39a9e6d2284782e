"""The registry store and the prompt table, below the HTTP layer."""

from __future__ import annotations

import sqlite3

import pytest
import torch

from softprompt.errors import ArtifactError, IncompatibleBaseError, InputError
from softprompt.model.inject import PromptParts
from softprompt.serving.cache import Entry, PartsCache
from softprompt.serving.errors import Conflict, NotFound
from softprompt.serving.store import PromptHandle, Store
from tests.serving.conftest import make_prompt


@pytest.fixture
def store(tmp_path, tiny):
    s = Store(tmp_path / "reg")
    s.bind_base(tiny.fingerprint)
    s.create_tenant("a")
    return s


def _push(store, tiny, task="t", seed=0):
    m, t = make_prompt(tiny, "prompt_tuning", seed=seed, n=2).to_bytes()
    return store.push("a", task, m, t, "prompt_tuning")


def test_versions_autoincrement_and_are_immutable(store, tiny):
    assert [_push(store, tiny, seed=i).version for i in range(3)] == [1, 2, 3]
    db = sqlite3.connect(store.root / "registry.db")
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        db.execute("UPDATE versions SET digest='x'")
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        db.execute("DELETE FROM versions")


def test_promote_and_rollback_history(store, tiny):
    for i in range(3):
        _push(store, tiny, seed=i)
    assert store.resolve("a", "t")[0].version == 3  # no prod alias: the newest
    for v in (1, 2, 3):
        store.promote("a", "t", v)
    assert store.promote("a", "t", 3)["previous"] == 3  # a no-op adds no history
    assert store.resolve("a", "t")[0].version == 3
    assert store.rollback("a", "t")["version"] == 2
    assert store.rollback("a", "t")["version"] == 1
    with pytest.raises(Conflict, match="first set to version 1"):
        store.rollback("a", "t")
    assert store.resolve("a", "t", "prod")[0].version == 1
    with pytest.raises(Conflict, match="never promoted"):
        store.rollback("a", "t", "canary")


@pytest.mark.parametrize("name", ["a/b", "..", "../x", "a\x00b", "", "x" * 65, "base", " t", "t.json", 5])
def test_bad_task_names(store, tiny, name):
    m, t = make_prompt(tiny, "prompt_tuning", seed=0, n=2).to_bytes()
    with pytest.raises(InputError):
        store.push("a", name, m, t, "prompt_tuning")
    fixed = {"registry.db", "registry.db-wal", "registry.db-shm", "blobs", "tmp"}
    hexdigits = set("0123456789abcdef")
    assert all(p.name in fixed or set(p.name) <= hexdigits for p in store.root.rglob("*"))  # no client-named path


def test_resolve_errors_and_handles(store, tiny):
    info = _push(store, tiny)
    h, _ = store.resolve("a", "t", 1)
    assert h == PromptHandle("a", "t", 1, info.digest)
    with pytest.raises(NotFound):
        store.resolve("a", "missing")
    with pytest.raises(NotFound):
        store.resolve("a", "t", 2)
    store.create_tenant("b")
    with pytest.raises(NotFound):
        store.resolve("b", "t")  # tasks are per tenant


def test_damaged_blob_is_detected(store, tiny):
    info = _push(store, tiny)
    h, _ = store.resolve("a", "t")
    path = store.blobs.path(info.tensors_sha256)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="damaged"):
        store.read(h)
    assert store.check()  # reported


def test_blobs_of_a_push_killed_before_its_commit_are_collected(store, tiny):
    info = _push(store, tiny)
    orphan = store.blobs.put(b"written by a push that was killed before its row was committed")
    stray = store.blobs.root / "notes.txt"
    stray.write_text("not a blob")
    assert store.blobs.path(orphan).exists()
    reopened = Store(store.root)  # every Store collects on opening (server start, CLI commands)
    assert not reopened.blobs.path(orphan).exists()
    assert reopened.blobs.path(info.digest).exists() and reopened.blobs.path(info.tensors_sha256).exists()
    assert stray.exists()  # only files named like blobs are touched
    assert reopened.check() == [] and reopened.collect_garbage() == 0
    assert reopened.read(reopened.resolve("a", "t")[0])


def test_a_push_writes_its_files_under_the_write_lock(store, tiny):
    """A collection in another process waits for the push instead of deleting its not-yet-referenced files."""
    held = []
    real = store.blobs.put

    def put(data):
        other = sqlite3.connect(store.root / "registry.db", timeout=0)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
        other.close()
        held.append(True)
        return real(data)

    store.blobs.put = put
    _push(store, tiny)
    assert held == [True, True]


def test_registry_is_bound_to_one_base(store):
    with pytest.raises(IncompatibleBaseError, match="another base model"):
        store.bind_base({"model_type": "gpt2", "hidden_size": 64})


def test_parts_cache_is_lru_with_a_byte_cap():
    loads = []

    def load(h):
        loads.append(h.version)
        return Entry(PromptParts(embeds=torch.zeros(4, 8)), "prompt_tuning", nbytes=128)

    cache = PartsCache(load, max_bytes=300)  # room for two entries
    hs = [PromptHandle("a", "t", v, "d") for v in range(4)]
    cache.get(hs[0])
    cache.get(hs[1])
    cache.get(hs[0])  # hit, and 0 becomes the most recent
    cache.get(hs[2])  # evicts 1
    assert loads == [0, 1, 2] and cache.nbytes <= 300 and len(cache) == 2
    assert hs[0] in cache and hs[1] not in cache
    cache.get(hs[1])
    assert loads == [0, 1, 2, 1]


def test_served_damaged_artifact_is_a_clear_error_and_server_keeps_serving(served):
    v = served.push("acme", "damaged", make_prompt(served.base, "prompt_tuning", seed=77, n=2))
    store = served.state.store
    h, info = store.resolve("acme", "damaged", v)
    path = store.blobs.path(info.tensors_sha256)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with served.client("acme") as c:
        r = c.post("/v1/completions", json={"model": "damaged", "prompt": "x", "max_tokens": 2})
        assert r.status_code == 422 and "damaged" in r.json()["error"]["message"]
        assert c.post("/v1/completions", json={"model": "pt", "prompt": "x", "max_tokens": 2}).status_code == 200
