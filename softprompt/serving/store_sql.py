"""The tenant, key, task, version, alias and id queries both SQL stores (store_sqlite.py, store_postgres.py) run
word for word.

A backend mixes in `SqlQueries`, sets `PARAM` (its driver's placeholder: sqlite3 "?", psycopg "%s") and provides
`_write()` (a transaction context yielding a connection) and `_read(fn)` (fn(connection) on its read path).
The SQL is written with "?" and rewritten once per call by `_q`.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any, ClassVar

from softprompt.serving.errors import Conflict, NotFound
from softprompt.serving.store import DEFAULT_ALIAS, PromptHandle, VersionInfo, check_name, hash_key, pick_version


class SqlQueries:
    PARAM: ClassVar[str] = "?"

    def _q(self, sql: str) -> str:
        return sql if self.PARAM == "?" else sql.replace("?", self.PARAM)

    # --- tenants and keys ---
    def create_tenant(self, name: str) -> str:
        """Create a tenant; returns its first API key (shown once, stored only as a hash)."""
        check_name("tenant", name)
        with self._write() as db:
            if db.execute(self._q("SELECT 1 FROM tenants WHERE name=?"), (name,)).fetchone():
                raise Conflict(f"tenant {name!r} already exists; add a key with `softprompt tenant key {name}`")
            db.execute(self._q("INSERT INTO tenants (name, created_at) VALUES (?, ?)"), (name, time.time()))
        return self.add_key(name)

    def add_key(self, tenant: str) -> str:
        key = "sp-" + secrets.token_urlsafe(32)
        with self._write() as db:
            tid = self._tenant_id(db, tenant)
            db.execute(self._q("INSERT INTO api_keys (key_hash, tenant_id, prefix, created_at) VALUES (?, ?, ?, ?)"),
                       (hash_key(key), tid, key[:8], time.time()))
        return key

    def revoke_keys(self, tenant: str) -> int:
        with self._write() as db:
            tid = self._tenant_id(db, tenant)
            return db.execute(self._q("UPDATE api_keys SET revoked=TRUE WHERE tenant_id=?"), (tid,)).rowcount

    def tenants(self) -> list[dict[str, Any]]:
        rows = self._read(lambda db: db.execute(
            "SELECT t.name, COUNT(DISTINCT k.key_hash), COUNT(DISTINCT ta.id) FROM tenants t "
            "LEFT JOIN api_keys k ON k.tenant_id=t.id AND NOT k.revoked LEFT JOIN tasks ta ON ta.tenant_id=t.id "
            "GROUP BY t.id ORDER BY t.name").fetchall())
        return [{"tenant": n, "active_keys": k, "tasks": t} for n, k, t in rows]

    def authenticate(self, key: str) -> str | None:
        """The tenant owning `key`, or None. Keys are compared as sha256 hashes in constant time."""
        if not key or len(key) > 256:
            return None
        h = hash_key(key)
        row = self._read(lambda db: db.execute(self._q(
            "SELECT k.key_hash, t.name FROM api_keys k JOIN tenants t ON t.id=k.tenant_id "
            "WHERE k.key_hash=? AND NOT k.revoked"), (h,)).fetchone())
        if row is None or not hmac.compare_digest(row[0], h):
            return None
        return row[1]

    def _tenant_id(self, db: Any, tenant: str) -> int:
        row = db.execute(self._q("SELECT id FROM tenants WHERE name=?"), (tenant,)).fetchone()
        if row is None:
            raise NotFound(f"tenant {tenant!r} does not exist; create it with `softprompt tenant create {tenant}`")
        return row[0]

    def _task_id(self, db: Any, tenant: str, task: str) -> int:
        row = db.execute(self._q("SELECT ta.id FROM tasks ta JOIN tenants t ON t.id=ta.tenant_id "
                                 "WHERE t.name=? AND ta.name=?"), (tenant, task)).fetchone()
        if row is None:
            raise NotFound(f"task {task!r} not found; push a version first (see GET /v1/tasks for your tasks)")
        return row[0]

    # --- tasks and versions ---
    def _versions(self, db: Any, task_id: int, task: str) -> list[VersionInfo]:
        rows = db.execute(self._q("SELECT version, method, digest, tensors_sha256, num_bytes, created_at FROM versions "
                                  "WHERE task_id=? ORDER BY version"), (task_id,)).fetchall()
        return [VersionInfo(task, *r) for r in rows]

    def _aliases(self, db: Any, task_id: int) -> dict[str, int]:
        return dict(db.execute(self._q("SELECT name, version FROM aliases WHERE task_id=?"), (task_id,)).fetchall())

    def list_tasks(self, tenant: str) -> list[dict[str, Any]]:
        def run(db: Any) -> list[dict[str, Any]]:
            rows = db.execute(self._q("SELECT ta.id, ta.name FROM tasks ta JOIN tenants t ON t.id=ta.tenant_id "
                                      "WHERE t.name=? ORDER BY ta.name"), (tenant,)).fetchall()
            return [{"task": name, "versions": [v.to_dict() for v in self._versions(db, task_id, name)],
                     "aliases": self._aliases(db, task_id)} for task_id, name in rows]

        return self._read(run)

    def resolve(self, tenant: str, task: str, ref: str | int | None = None) -> tuple[PromptHandle, VersionInfo]:
        """task + (version number | alias | 'latest' | None) -> the immutable handle of one version.

        None means the 'prod' alias when it is set, else the newest version (see `pick_version`).
        """
        check_name("task", task)

        def run(db: Any) -> tuple[dict[int, VersionInfo], dict[str, int]]:
            task_id = self._task_id(db, tenant, task)
            return {v.version: v for v in self._versions(db, task_id, task)}, self._aliases(db, task_id)

        versions, aliases = self._read(run)
        info = versions[pick_version(task, ref, versions, aliases)]
        return PromptHandle(tenant, task, info.version, info.digest), info

    # --- aliases ---
    def promote(self, tenant: str, task: str, ref: str | int | None = None,
                alias: str = DEFAULT_ALIAS) -> dict[str, Any]:
        """Point `alias` at a version (default: the newest) in one transaction; remembers where it pointed."""
        check_name("alias", alias)
        handle, _ = self.resolve(tenant, task, "latest" if ref is None else ref)
        with self._write() as db:
            task_id = self._task_id(db, tenant, task)
            previous = self._aliases(db, task_id).get(alias)
            if previous != handle.version:
                now = time.time()
                db.execute(self._q("INSERT INTO alias_history (task_id, name, previous, version, at) "
                                   "VALUES (?, ?, ?, ?, ?)"), (task_id, alias, previous, handle.version, now))
                db.execute(self._q("INSERT INTO aliases VALUES (?, ?, ?, ?) ON CONFLICT (task_id, name) "
                                   "DO UPDATE SET version=excluded.version, updated_at=excluded.updated_at"),
                           (task_id, alias, handle.version, now))
        return {"task": task, "alias": alias, "version": handle.version, "previous": previous}

    def rollback(self, tenant: str, task: str, alias: str = DEFAULT_ALIAS) -> dict[str, Any]:
        """Point `alias` back at the version it pointed to before its last promotion, atomically."""
        check_name("alias", alias)
        with self._write() as db:
            task_id = self._task_id(db, tenant, task)
            row = db.execute(self._q("SELECT id, previous, version FROM alias_history WHERE task_id=? AND name=? "
                                     "ORDER BY id DESC LIMIT 1"), (task_id, alias)).fetchone()
            if row is None:
                raise Conflict(f"alias {alias!r} of task {task!r} was never promoted; nothing to roll back")
            hist_id, previous, current = row
            if previous is None:
                raise Conflict(f"alias {alias!r} of task {task!r} was first set to version {current}; there is no "
                               "earlier version to roll back to (promote one explicitly)")
            db.execute(self._q("UPDATE aliases SET version=?, updated_at=? WHERE task_id=? AND name=?"),
                       (previous, time.time(), task_id, alias))
            db.execute(self._q("DELETE FROM alias_history WHERE id=?"), (hist_id,))
        return {"task": task, "alias": alias, "version": previous, "rolled_back_from": current}
