"""The store (both backends: SQLite + files, and PostgreSQL) and the prompt table, below the HTTP layer."""

from __future__ import annotations

import sqlite3
import threading

import pytest
import torch

from softprompt.errors import ArtifactError, IncompatibleBaseError, InputError
from softprompt.model.inject import PromptParts
from softprompt.serving.cache import Entry, PartsCache
from softprompt.serving.errors import Conflict, NotFound
from softprompt.serving.store import PromptHandle, is_postgres_url, open_store, parse_ref, pick_version
from softprompt.serving.store_cache import CachedStore
from softprompt.serving.store_sqlite import SqliteStore
from tests.serving.conftest import make_prompt


@pytest.fixture
def store(store_location, tiny):
    s = open_store(store_location)
    s.bind_base(tiny.fingerprint)
    s.create_tenant("a")
    return s


def _push(store, tiny, task="t", seed=0):
    m, t = make_prompt(tiny, "prompt_tuning", seed=seed, n=2).to_bytes()
    return store.push("a", task, m, t, "prompt_tuning")


def _raw_sql(store, query: str) -> None:
    """Run SQL on the store's database directly, behind its back (as another program could)."""
    if is_postgres_url(store.location):
        import psycopg

        with psycopg.connect(store.url, autocommit=True) as conn:
            conn.execute(query)
    else:
        db = sqlite3.connect(store.root / "registry.db", isolation_level=None)
        try:
            db.executescript(query)
        finally:
            db.close()


def _damage(store, sha: str) -> None:
    if is_postgres_url(store.location):
        _raw_sql(store, "ALTER TABLE blobs DISABLE TRIGGER blobs_immutable; "
                        f"UPDATE blobs SET data = data || '\\x00'::bytea WHERE sha256 = '{sha}'")
    else:
        path = store.blobs.path(sha)
        data = bytearray(path.read_bytes())
        data[-1] ^= 1
        path.write_bytes(bytes(data))


def test_versions_autoincrement_and_are_immutable(store, tiny):
    assert [_push(store, tiny, seed=i).version for i in range(3)] == [1, 2, 3]
    with pytest.raises(Exception, match="immutable"):
        _raw_sql(store, "UPDATE versions SET digest='x'")
    with pytest.raises(Exception, match="immutable"):
        _raw_sql(store, "DELETE FROM versions")
    assert store.check() == [] and len(store.list_tasks("a")[0]["versions"]) == 3


def test_concurrent_pushes_get_distinct_consecutive_versions(store, store_location, tiny):
    """Pushes from several connections at once (threads here; replicas in production) never share a number."""
    got, errors = [], []

    def pusher(seed):
        try:
            other = open_store(store_location)
            for i in range(3):
                got.append(_push(other, tiny, seed=seed * 10 + i).version)
            other.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=pusher, args=(s,)) for s in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert errors == [] and sorted(got) == list(range(1, 13))


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
    store.promote("a", "t", "latest", alias="canary")
    assert store.list_tasks("a")[0]["aliases"] == {"prod": 1, "canary": 3}


@pytest.mark.parametrize("name", ["a/b", "..", "../x", "a\x00b", "", "x" * 65, "base", " t", "t.json", 5])
def test_bad_task_names(store, tiny, name):
    m, t = make_prompt(tiny, "prompt_tuning", seed=0, n=2).to_bytes()
    with pytest.raises(InputError):
        store.push("a", name, m, t, "prompt_tuning")
    if isinstance(store, SqliteStore):
        fixed = {"registry.db", "registry.db-wal", "registry.db-shm", "blobs", "tmp"}
        hexdigits = set("0123456789abcdef")
        assert all(p.name in fixed or set(p.name) <= hexdigits for p in store.root.rglob("*"))  # no client path
    assert store.list_tasks("a") == []


def test_resolve_errors_and_handles(store, tiny):
    info = _push(store, tiny)
    h, _ = store.resolve("a", "t", 1)
    assert h == PromptHandle("a", "t", 1, info.digest) == store.resolve("a", "t", "1")[0]
    with pytest.raises(NotFound):
        store.resolve("a", "missing")
    with pytest.raises(NotFound, match="no version 2"):
        store.resolve("a", "t", 2)
    with pytest.raises(NotFound, match="no alias 'canary'"):
        store.resolve("a", "t", "canary")
    with pytest.raises(InputError):
        store.resolve("a", "t", "../x")
    store.create_tenant("b")
    with pytest.raises(NotFound):
        store.resolve("b", "t")  # tasks are per tenant
    with pytest.raises(NotFound):
        store.read(PromptHandle("b", "t", 1, info.digest))


def test_reference_parsing():
    assert [parse_ref(r) for r in (None, 3, "3", "latest", "prod")] == [None, 3, 3, "latest", "prod"]
    for bad in ("../x", "", True, "a b"):
        with pytest.raises(InputError):
            parse_ref(bad)
    assert pick_version("t", None, [1, 2], {}) == 2
    assert pick_version("t", None, [1, 2], {"prod": 1}) == 1
    assert pick_version("t", "latest", [1, 2], {"prod": 1}) == 2
    with pytest.raises(NotFound, match="no versions"):
        pick_version("t", None, [], {})


def test_store_urls_are_shown_without_their_password():
    from softprompt.serving.store_postgres import redact

    assert redact("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redact("postgresql://u@/db?host=/tmp&password=s3cret") == "postgresql://u@/db?host=/tmp&password=***"
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


def test_keys_authenticate_and_revoke(store):
    key = store.add_key("a")
    assert store.authenticate(key) == "a" and store.authenticate(key + "x") is None
    assert store.authenticate("") is None and store.authenticate("k" * 300) is None
    assert store.tenants() == [{"tenant": "a", "active_keys": 2, "tasks": 0}]
    assert store.revoke_keys("a") == 2 and store.authenticate(key) is None
    with pytest.raises(Conflict, match="already exists"):
        store.create_tenant("a")
    with pytest.raises(NotFound, match="does not exist"):
        store.add_key("nobody")


def test_damaged_blob_is_detected(store, tiny):
    info = _push(store, tiny)
    h, _ = store.resolve("a", "t")
    _damage(store, info.tensors_sha256)
    with pytest.raises(ArtifactError, match="damaged"):
        store.read(h)
    assert store.read_manifest(h)  # the other blob is intact
    assert any("damaged" in p for p in store.check())  # reported


def test_generation_moves_with_every_change_only(store, tiny):
    g0 = store.generation()
    _push(store, tiny)
    store.resolve("a", "t")
    store.list_tasks("a")
    g1 = store.generation()
    assert g1 > g0
    store.promote("a", "t")
    assert store.generation() > g1


def test_watch_reports_changes_made_by_another_process(store, store_location, tiny):
    """What keeps every replica current: a promote through another connection reaches `watch` quickly."""
    seen: list[str] = []
    arrived = threading.Event()
    watching = threading.Event()  # the watch has read the counter it compares against (and LISTENs)
    stop = threading.Event()

    def on_change(reason):
        seen.append(reason)
        (watching if reason == "watching" else arrived).set()

    watcher = threading.Thread(target=store.watch, args=(on_change, stop), daemon=True)
    watcher.start()
    try:
        assert watching.wait(30), "the watch never reported that it is watching"
        other = open_store(store_location)
        _push(other, tiny)
        assert arrived.wait(30), "no change reported"
        assert seen[0] == "watching" and seen[1] in ("notify", "poll")
    finally:
        stop.set()
        watcher.join(30)
    assert not watcher.is_alive()


def test_cached_store_forgets_what_it_remembered_before_its_watch_was_live(store, store_location, tiny):
    """A change landing between a replica's first answers and its watch reading the store's counter is inside the
    watch's baseline, so it is never reported: the cache must forget what it had when the watch goes live."""
    cached = CachedStore(store)
    _push(cached, tiny)
    assert cached.resolve("a", "t")[0].version == 1  # remembered
    other = open_store(store_location)
    _push(other, tiny, seed=1)  # behind its back, before the watch exists
    cached.start_watching()
    try:
        assert cached.watching.wait(30), "the watch never went live"
        assert cached.resolve("a", "t")[0].version == 2
        assert cached.changes[-1][1] == "watching"
    finally:
        cached.stop_watching()
    assert not cached.watching.is_set()


def test_cached_store_remembers_until_a_change(store, store_location, tiny):
    cached = CachedStore(store)
    key = cached.add_key("a")
    _push(cached, tiny)
    assert cached.resolve("a", "t")[0].version == 1 and cached.authenticate(key) == "a"
    _push(open_store(store_location), tiny, seed=1)  # behind its back: not seen until told
    assert cached.resolve("a", "t")[0].version == 1
    cached.invalidate("notify")
    assert cached.resolve("a", "t")[0].version == 2
    _push(cached, tiny, seed=2)  # through it: seen at once
    assert cached.resolve("a", "t")[0].version == 3
    cached.revoke_keys("a")
    assert cached.authenticate(key) is None
    assert [r for _, r in cached.changes] == ["write", "write", "notify", "write", "write"]


def test_sqlite_blobs_of_a_push_killed_before_its_commit_are_collected(tmp_path, tiny):
    store = SqliteStore(tmp_path / "reg")
    store.bind_base(tiny.fingerprint)
    store.create_tenant("a")
    info = _push(store, tiny)
    orphan = store.blobs.put(b"written by a push that was killed before its row was committed")
    stray = store.blobs.root / "notes.txt"
    stray.write_text("not a blob")
    assert store.blobs.path(orphan).exists()
    reopened = SqliteStore(store.root)  # every SqliteStore collects on opening (server start, CLI commands)
    assert not reopened.blobs.path(orphan).exists()
    assert reopened.blobs.path(info.digest).exists() and reopened.blobs.path(info.tensors_sha256).exists()
    assert stray.exists()  # only files named like blobs are touched
    assert reopened.check() == [] and reopened.collect_garbage() == 0
    assert reopened.read(reopened.resolve("a", "t")[0])


def test_sqlite_push_writes_its_files_under_the_write_lock(tmp_path, tiny):
    """A collection in another process waits for the push instead of deleting its not-yet-referenced files."""
    store = SqliteStore(tmp_path / "reg")
    store.create_tenant("a")
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


def test_store_is_bound_to_one_base(store):
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


def test_a_promote_by_another_process_reaches_a_server_on_a_store_directory(served):
    """`softprompt promote --store DIR` next to a running server: the server follows within its poll interval."""
    for seed in (1, 2):
        served.push("acme", "polled", make_prompt(served.base, "prompt_tuning", seed=200 + seed, n=2),
                    promote="prod" if seed == 1 else None)
    with served.client("acme") as c:
        model = lambda: c.post("/v1/completions", json={"model": "polled", "prompt": "x", "max_tokens": 1}).json()
        assert model()["model"] == "polled@1"  # resolved, and remembered by the server
        since = len(served.state.store.changes)
        SqliteStore(served.state.store.location).promote("acme", "polled", 2)  # not through the server's object
        with served.state.store.changed:
            assert served.state.store.changed.wait_for(lambda: len(served.state.store.changes) > since, 10)
        assert served.state.store.changes[since][1] == "poll"
        assert model()["model"] == "polled@2"


def test_served_damaged_artifact_is_a_clear_error_and_server_keeps_serving(served):
    v = served.push("acme", "damaged", make_prompt(served.base, "prompt_tuning", seed=77, n=2))
    store = served.state.store
    h, info = store.resolve("acme", "damaged", v)
    _damage(store.backend, info.tensors_sha256)
    with served.client("acme") as c:
        r = c.post("/v1/completions", json={"model": "damaged", "prompt": "x", "max_tokens": 2})
        assert r.status_code == 422 and "damaged" in r.json()["error"]["message"]
        assert c.post("/v1/completions", json={"model": "pt", "prompt": "x", "max_tokens": 2}).status_code == 200


def test_postgres_requests_fail_fast_while_the_database_is_down(pg_url, monkeypatch):
    """After one failed connect, requests do not each wait out a connect timeout (the event loop stays free)."""
    import psycopg

    from softprompt.serving.errors import StoreUnavailable
    from softprompt.serving.store_postgres import PostgresStore

    store = PostgresStore(pg_url)
    store.close()
    calls = []

    def refuse(*args, **kwargs):
        calls.append(1)
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(psycopg, "connect", refuse)
    for _ in range(3):
        with pytest.raises(StoreUnavailable, match="cannot reach the PostgreSQL store .*connection refused"):
            store.generation()
    assert calls == [1]
    monkeypatch.undo()
    store._down = None  # what the watch thread does once it has reconnected
    assert store.generation() >= 0
