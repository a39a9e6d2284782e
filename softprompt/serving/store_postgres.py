"""The PostgreSQL store (`--store postgresql://user@host/db`): what several server replicas share.

Everything lives in the database, the artifact bytes too (a `blobs` table of bytea rows named by their sha256):
a push inserts its two blobs and its version row in ONE transaction, so a process killed at any instant leaves
either the whole version or nothing, and there is nothing to collect afterwards. Every write transaction moves a
generation counter and sends `NOTIFY softprompt_store, '<generation>'`, delivered at commit; `watch`
(store_postgres_watch.py) LISTENs for it on a dedicated connection and re-reads the counter every few seconds,
so a missed notification heals.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from softprompt.errors import ArtifactError
from softprompt.serving.blobs import sha256_hex
from softprompt.serving.errors import NotFound, StoreUnavailable
from softprompt.serving.store import (
    OnChange,
    PromptHandle,
    VersionInfo,
    check_name,
    check_same_base,
)
from softprompt.serving.store_postgres_watch import CHANNEL, CONNECT_TIMEOUT_S, watch
from softprompt.serving.store_sql import SqlQueries

RECHECK_S = 2.0
"""How often `watch` re-reads the generation counter when no notification came (heals a missed one)."""
FAIL_FAST_S = 5.0
"""After a failed connect, requests fail at once (no connect timeout to wait out) until the watch thread
reconnects, or this long."""
SCHEMA_VERSION = "1"
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changes (id INT PRIMARY KEY CHECK (id = 1), generation BIGINT NOT NULL);
INSERT INTO changes VALUES (1, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS tenants (
    id BIGSERIAL PRIMARY KEY, name TEXT UNIQUE NOT NULL, created_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY, tenant_id BIGINT NOT NULL REFERENCES tenants(id),
    prefix TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, revoked BOOLEAN NOT NULL DEFAULT FALSE);
CREATE TABLE IF NOT EXISTS tasks (
    id BIGSERIAL PRIMARY KEY, tenant_id BIGINT NOT NULL REFERENCES tenants(id), name TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL, UNIQUE (tenant_id, name));
CREATE TABLE IF NOT EXISTS blobs (sha256 TEXT PRIMARY KEY, data BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    task_id BIGINT NOT NULL REFERENCES tasks(id), version INT NOT NULL, method TEXT NOT NULL,
    digest TEXT NOT NULL REFERENCES blobs(sha256), tensors_sha256 TEXT NOT NULL REFERENCES blobs(sha256),
    num_bytes BIGINT NOT NULL, created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (task_id, version));
CREATE TABLE IF NOT EXISTS aliases (
    task_id BIGINT NOT NULL, name TEXT NOT NULL, version INT NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (task_id, name), FOREIGN KEY (task_id, version) REFERENCES versions(task_id, version));
CREATE TABLE IF NOT EXISTS alias_history (
    id BIGSERIAL PRIMARY KEY, task_id BIGINT NOT NULL, name TEXT NOT NULL,
    previous INT, version INT NOT NULL, at DOUBLE PRECISION NOT NULL);
CREATE OR REPLACE FUNCTION softprompt_immutable() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION '% are immutable', TG_TABLE_NAME; END $$;
CREATE OR REPLACE TRIGGER versions_immutable BEFORE UPDATE OR DELETE ON versions
    FOR EACH ROW EXECUTE FUNCTION softprompt_immutable();
CREATE OR REPLACE TRIGGER blobs_immutable BEFORE UPDATE OR DELETE ON blobs
    FOR EACH ROW EXECUTE FUNCTION softprompt_immutable();
"""


def redact(url: str) -> str:
    """The URL without its password (for messages and logs): `user:***@host`, `password=***`."""
    url = re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", url)
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


class PostgresStore(SqlQueries):
    """A store in one PostgreSQL database. Safe to share between threads (one connection per thread) and between
    processes and machines (every write is one transaction)."""

    PARAM = "%s"  # psycopg's placeholder, for the queries SqlQueries shares

    def __init__(self, url: str, recheck_s: float = RECHECK_S):
        try:
            import psycopg
        except ImportError:
            raise StoreUnavailable("a postgresql:// store needs the psycopg driver: pip install "
                                   "'softprompt[postgres]'") from None
        self._pg = psycopg
        self.url, self.location, self.recheck_s = url, redact(url), recheck_s
        self._local = threading.local()
        self._down: tuple[float, str] | None = None  # (when, message) of the last failed connect
        with self._write(change=False) as db:  # replicas starting together create the schema once
            db.execute("SELECT pg_advisory_xact_lock(7146)")
            if db.execute("SELECT to_regclass('alias_history') IS NULL").fetchone()[0]:
                db.execute(_SCHEMA)
                db.execute("INSERT INTO meta VALUES ('schema_version', %s)", (SCHEMA_VERSION,))

    # --- connections and transactions ---
    def _unavailable(self, e: Exception) -> StoreUnavailable:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return StoreUnavailable(f"cannot reach the PostgreSQL store {self.location}: {reason}; start the database, "
                                "or fix the --store URL")

    def _connect(self) -> Any:
        down = self._down
        if down is not None and time.monotonic() - down[0] < FAIL_FAST_S:
            raise StoreUnavailable(down[1])  # a request must not wait out a connect timeout on a dead host
        try:
            conn = self._pg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
        except self._pg.OperationalError as e:
            error = self._unavailable(e)
            self._down = (time.monotonic(), str(error))
            raise error from None
        self._down = None
        return conn

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self._local.conn = self._connect()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _lost(self, e: Exception) -> bool:
        """Whether `e` means the connection is gone (then it is dropped); other errors are the query's own."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            self.close()
            return True
        return False

    def _read(self, fn: Callable[[Any], T]) -> T:
        """Run a read; a connection lost since its last use (restart, pg_terminate_backend) is replaced once."""
        for attempt in range(2):
            try:
                return fn(self._conn())
            except self._pg.OperationalError as e:
                if not self._lost(e):
                    raise
                if attempt:
                    raise self._unavailable(e) from None
        raise AssertionError("unreachable")

    @contextmanager
    def _write(self, change: bool = True) -> Iterator[Any]:
        """One transaction. A `change` takes the generation row first (so writers queue there, and version numbers
        are computed one writer at a time) and notifies the watchers at commit."""
        try:
            db = self._conn()
            try:
                db.execute("SELECT 1")  # a write is never retried: make sure the connection is alive first
            except self._pg.OperationalError:
                self.close()
                db = self._conn()
            with db.transaction():
                if change:
                    gen = db.execute("UPDATE changes SET generation = generation + 1 RETURNING generation").fetchone()
                yield db
                if change:
                    db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(gen[0])))
        except self._pg.OperationalError as e:
            if not self._lost(e):
                raise
            raise self._unavailable(e) from None

    # --- changes ---
    def generation(self) -> int:
        return self._read(lambda db: db.execute("SELECT generation FROM changes").fetchone()[0])

    def watch(self, on_change: OnChange, stop: threading.Event) -> None:
        """LISTEN on a dedicated connection; re-read the counter every `recheck_s`; reconnect when it drops."""
        def connected() -> None:
            self._down = None  # the database is back: requests may connect again

        watch(self._pg, self.url, self.location, self.recheck_s, on_change, stop, connected)

    # --- the base model this store serves ---
    def base_fingerprint(self) -> dict[str, Any] | None:
        row = self._read(lambda db: db.execute("SELECT value FROM meta WHERE key='base_fingerprint'").fetchone())
        return json.loads(row[0]) if row else None

    def bind_base(self, fingerprint: dict[str, Any]) -> None:
        """Record the base model on first use; refuse to serve a store made for another base."""
        with self._write(change=False) as db:
            db.execute("INSERT INTO meta VALUES ('base_fingerprint', %s) ON CONFLICT DO NOTHING",
                       (json.dumps(fingerprint, sort_keys=True),))
            old = json.loads(db.execute("SELECT value FROM meta WHERE key='base_fingerprint'").fetchone()[0])
        check_same_base(self.location, old, fingerprint)

    # --- versions ---
    def push(self, tenant: str, task: str, manifest: bytes, tensors: bytes, method: str) -> VersionInfo:
        """Store an already validated artifact as the task's next version: bytes and row in one transaction."""
        check_name("task", task)
        now = time.time()
        digest, tensors_sha = sha256_hex(manifest), sha256_hex(tensors)
        with self._write() as db:
            tid = self._tenant_id(db, tenant)
            for sha, data in ((tensors_sha, tensors), (digest, manifest)):
                db.execute("INSERT INTO blobs VALUES (%s, %s) ON CONFLICT DO NOTHING", (sha, data))
            db.execute("INSERT INTO tasks (tenant_id, name, created_at) VALUES (%s, %s, %s) "
                       "ON CONFLICT (tenant_id, name) DO NOTHING", (tid, task, now))
            task_id = self._task_id(db, tenant, task)
            version = db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE task_id=%s",
                                 (task_id,)).fetchone()[0]
            db.execute("INSERT INTO versions VALUES (%s, %s, %s, %s, %s, %s, %s)",
                       (task_id, version, method, digest, tensors_sha, len(manifest) + len(tensors), now))
        return VersionInfo(task, version, method, digest, tensors_sha, len(manifest) + len(tensors), now)

    def _blob(self, db: Any, sha: str) -> bytes:
        row = db.execute("SELECT data FROM blobs WHERE sha256=%s", (sha,)).fetchone()
        if row is None:
            raise ArtifactError(f"blob {sha[:12]} is missing from the store")
        data = bytes(row[0])
        if sha256_hex(data) != sha:
            raise ArtifactError(f"blob {sha[:12]} is damaged in the store (its bytes no longer match its sha256)")
        return data

    def _digests(self, db: Any, handle: PromptHandle) -> tuple[str, str]:
        row = db.execute("SELECT v.digest, v.tensors_sha256 FROM versions v JOIN tasks ta ON ta.id=v.task_id "
                         "JOIN tenants t ON t.id=ta.tenant_id WHERE t.name=%s AND ta.name=%s AND v.version=%s",
                         (handle.tenant, handle.task, handle.version)).fetchone()
        if row is None or row[0] != handle.digest:
            raise NotFound(f"version {handle} is not in the store")
        return row[0], row[1]

    def read_manifest(self, handle: PromptHandle) -> bytes:
        return self._read(lambda db: self._blob(db, self._digests(db, handle)[0]))

    def read(self, handle: PromptHandle) -> tuple[bytes, bytes]:
        """(manifest bytes, tensor bytes) of a handle, each verified against its sha256."""
        def run(db: Any) -> tuple[bytes, bytes]:
            digest, tensors_sha = self._digests(db, handle)
            return self._blob(db, digest), self._blob(db, tensors_sha)

        return self._read(run)

    def check(self) -> list[str]:
        """Consistency problems (empty when sound): every version's two blobs present and matching their sha256
        (hashed inside the database)."""
        rows = self._read(lambda db: db.execute(
            "SELECT d.sha, b.sha256 IS NULL, encode(sha256(b.data), 'hex') = d.sha FROM "
            "(SELECT digest AS sha FROM versions UNION SELECT tensors_sha256 FROM versions) d "
            "LEFT JOIN blobs b ON b.sha256 = d.sha").fetchall())
        return [f"blob {sha[:12]} is {'missing from' if missing else 'damaged in'} the store"
                for sha, missing, intact in rows if missing or not intact]
