"""The embedded store: SQLite metadata (WAL) + content-addressed artifact files, in one directory.

    registry/registry.db     tenants, hashed API keys, tasks, immutable versions, aliases and their history
    registry/blobs/ab/abc... manifest.json and prompt.safetensors bytes, named by their sha256
    registry/tmp/            writes in progress

A push writes both files (temp file, fsync, atomic rename) before the version row is inserted in one
transaction, so a process killed at any instant leaves the store consistent: a version either exists
with both files or does not exist. Tenants name tasks; nothing a client sends becomes a path.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from softprompt.serving.blobs import BlobStore
from softprompt.serving.errors import NotFound
from softprompt.serving.store import (
    OnChange,
    PromptHandle,
    VersionInfo,
    check_name,
    check_same_base,
)
from softprompt.serving.store_sql import SqlQueries

log = logging.getLogger(__name__)

DB_NAME = "registry.db"
SCHEMA_VERSION = "1"
POLL_S = 0.2
"""How often a server checks for changes made by other processes (another server, `softprompt promote`)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS changes (id INTEGER PRIMARY KEY CHECK (id = 1), generation INTEGER NOT NULL);
INSERT OR IGNORE INTO changes VALUES (1, 0);
CREATE TABLE IF NOT EXISTS tenants (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id),
    prefix TEXT NOT NULL, created_at REAL NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY, tenant_id INTEGER NOT NULL REFERENCES tenants(id), name TEXT NOT NULL,
    created_at REAL NOT NULL, UNIQUE (tenant_id, name));
CREATE TABLE IF NOT EXISTS versions (
    task_id INTEGER NOT NULL REFERENCES tasks(id), version INTEGER NOT NULL, method TEXT NOT NULL,
    digest TEXT NOT NULL, tensors_sha256 TEXT NOT NULL, num_bytes INTEGER NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (task_id, version));
CREATE TABLE IF NOT EXISTS aliases (
    task_id INTEGER NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (task_id, name), FOREIGN KEY (task_id, version) REFERENCES versions(task_id, version));
CREATE TABLE IF NOT EXISTS alias_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, task_id INTEGER NOT NULL, name TEXT NOT NULL,
    previous INTEGER, version INTEGER NOT NULL, at REAL NOT NULL);
CREATE TRIGGER IF NOT EXISTS versions_no_update BEFORE UPDATE ON versions
    BEGIN SELECT RAISE(ABORT, 'versions are immutable'); END;
CREATE TRIGGER IF NOT EXISTS versions_no_delete BEFORE DELETE ON versions
    BEGIN SELECT RAISE(ABORT, 'versions are immutable'); END;
"""


T = TypeVar("T")


class SqliteStore(SqlQueries):
    """One store directory. Safe to share between threads (one SQLite connection per thread) and between
    processes (SQLite WAL + atomic file writes): `softprompt push` may write while a server reads."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.location = str(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(self.root / "blobs", self.root / "tmp")
        self._local = threading.local()
        self._conn().executescript(_SCHEMA)
        self._conn().execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        self.blobs.clean_tmp()
        self.collect_garbage()

    # --- connections and transactions ---
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.root / DB_NAME, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """SqlQueries' read path: fn on this thread's connection."""
        return fn(self._conn())

    @contextmanager
    def _write(self, change: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken eagerly (BEGIN IMMEDIATE) so readers never see half of it; a `change`
        also moves the generation counter that servers watch."""
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            if change:
                db.execute("UPDATE changes SET generation = generation + 1")
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- changes, for servers that cache what they resolved ---
    def generation(self) -> int:
        return self._conn().execute("SELECT generation FROM changes").fetchone()[0]

    def watch(self, on_change: OnChange, stop: threading.Event) -> None:
        """Poll the generation counter every POLL_S seconds (SQLite has no notifications)."""
        last = self.generation()
        on_change("watching")
        try:
            while not stop.wait(POLL_S):
                now = self.generation()
                if now != last:
                    last = now
                    on_change("poll")
        finally:
            self.close()

    # --- the base model this store serves ---
    def base_fingerprint(self) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key='base_fingerprint'").fetchone()
        return json.loads(row[0]) if row else None

    def bind_base(self, fingerprint: dict[str, Any]) -> None:
        """Record the base model on first use; refuse to serve a store made for another base."""
        with self._write(change=False) as db:
            row = db.execute("SELECT value FROM meta WHERE key='base_fingerprint'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('base_fingerprint', ?)",
                           (json.dumps(fingerprint, sort_keys=True),))
                return
        old = json.loads(row[0])
        check_same_base(self.location, old, fingerprint)

    # --- versions ---
    def push(self, tenant: str, task: str, manifest: bytes, tensors: bytes, method: str) -> VersionInfo:
        """Store an already validated artifact as the task's next version (files first, then the row)."""
        check_name("task", task)
        now = time.time()
        with self._write() as db:  # the files are written under the write lock, so collect_garbage never sees them
            tensors_sha = self.blobs.put(tensors)  # unreferenced halfway through a push
            digest = self.blobs.put(manifest)
            tid = self._tenant_id(db, tenant)
            db.execute("INSERT OR IGNORE INTO tasks (tenant_id, name, created_at) VALUES (?, ?, ?)", (tid, task, now))
            task_id = self._task_id(db, tenant, task)
            version = db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE task_id=?",
                                 (task_id,)).fetchone()[0]
            db.execute("INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (task_id, version, method, digest, tensors_sha, len(manifest) + len(tensors), now))
        return VersionInfo(task, version, method, digest, tensors_sha, len(manifest) + len(tensors), now)

    def read_manifest(self, handle: PromptHandle) -> bytes:
        return self.blobs.get(self._digests(handle)[0])

    def read(self, handle: PromptHandle) -> tuple[bytes, bytes]:
        """(manifest bytes, tensor bytes) of a handle, each verified against its sha256."""
        digest, tensors_sha = self._digests(handle)
        return self.blobs.get(digest), self.blobs.get(tensors_sha)

    def _digests(self, handle: PromptHandle) -> tuple[str, str]:
        db = self._conn()
        row = db.execute("SELECT v.digest, v.tensors_sha256 FROM versions v JOIN tasks ta ON ta.id=v.task_id "
                         "JOIN tenants t ON t.id=ta.tenant_id WHERE t.name=? AND ta.name=? AND v.version=?",
                         (handle.tenant, handle.task, handle.version)).fetchone()
        if row is None or row[0] != handle.digest:
            raise NotFound(f"version {handle} is not in the store")
        return row[0], row[1]

    def collect_garbage(self) -> int:
        """Delete blobs no version refers to (left by pushes killed between writing files and committing the row).

        Runs under the write lock, and pushes write their files under it too, so a push in flight in another
        process is never cut short. Returns how many files were removed.
        """
        with self._write(change=False) as db:
            used = {d for row in db.execute("SELECT digest, tensors_sha256 FROM versions") for d in row}
            orphans = [p for p in self.blobs.root.glob("*/*") if BlobStore.is_digest(p.name) and p.name not in used]
            for p in orphans:
                p.unlink(missing_ok=True)
        if orphans:
            log.info("removed %d unreferenced blob(s) from %s", len(orphans), self.blobs.root)
        return len(orphans)

    def check(self) -> list[str]:
        """Consistency problems (empty when sound): SQLite integrity and every version's files present and intact."""
        db = self._conn()
        problems = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall() if r[0] != "ok"]
        for digest, tsha in db.execute("SELECT digest, tensors_sha256 FROM versions").fetchall():
            for d in (digest, tsha):
                try:
                    self.blobs.get(d)
                except Exception as e:  # noqa: BLE001 - report, do not stop
                    problems.append(str(e))
        return problems
