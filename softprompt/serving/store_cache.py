"""The store as a server replica sees it: API keys and `task@ref -> version` answers kept in memory until the
store reports a change, so a request needs no database round trip, and a replica whose database is down keeps
serving every version it has already resolved.

    request -> CachedStore.authenticate / resolve -> (hit) the answer given before
                                                  -> (miss) the backend store, then remembered
    backend.watch (a background thread: LISTEN/NOTIFY or polling) -> invalidate() -> next request re-resolves

A write made through this object (this replica's HTTP API) invalidates before it returns, so the replica that
promotes serves the new version at once; other replicas follow when their watch thread hears of it. Versions are
immutable, so a handle already given to a request (and its prompt-table entry) is never invalidated: in-flight
requests finish on the version they were admitted with.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from softprompt.serving.store import DEFAULT_ALIAS, PromptHandle, Store, VersionInfo, hash_key

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_ENTRIES = 65536


class CachedStore:
    """A Store that remembers authenticate / resolve answers of its backend until the backend changes."""

    def __init__(self, backend: Store, max_entries: int = MAX_ENTRIES):
        self.backend = backend
        self.location = backend.location
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._epoch = 0
        self._keys: dict[str, str] = {}
        self._resolved: dict[tuple[str, str, str | None], tuple[PromptHandle, VersionInfo]] = {}
        self.changed = threading.Condition()
        self.changes: list[tuple[float, str]] = []
        """(time.monotonic(), reason) of every invalidation, the last 1024: 'write' (through this object), or
        the backend's 'watching' (its watch is live: what was remembered before may predate a change it will not
        report), 'notify', 'poll', 'recheck', 'reconnect'."""
        self.watching = threading.Event()
        """Set once the watch thread has read the store's change counter: every later change will be heard of."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- invalidation ---
    def invalidate(self, reason: str = "write") -> None:
        """Forget every remembered answer (changes are rare; re-resolving is one query per task)."""
        with self._lock:
            self._epoch += 1
            self._keys.clear()
            self._resolved.clear()
        with self.changed:
            self.changes.append((time.monotonic(), reason))
            del self.changes[:-1024]
            self.changed.notify_all()
        if reason == "watching":
            self.watching.set()

    def start_watching(self) -> None:
        """Start the background thread that invalidates on changes made elsewhere (other replicas, the CLI)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="softprompt-store-watch", daemon=True)
        self._thread.start()

    def stop_watching(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.watching.clear()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.backend.watch(self.invalidate, self._stop)
            except Exception:  # noqa: BLE001 - keep watching whatever happened; the cache may be stale meanwhile
                log.exception("watching the store %s failed; retrying in 1 s", self.location)
                self.invalidate("reconnect")
                self._stop.wait(1.0)

    def _remember(self, table: dict, key: Any, load: Callable[[], T]) -> T:
        with self._lock:
            hit = table.get(key)
            epoch = self._epoch
        if hit is not None:
            return hit
        value = load()
        with self._lock:
            if value is not None and self._epoch == epoch:  # no change landed while loading: safe to keep
                if len(table) >= self.max_entries:
                    table.clear()
                table[key] = value
        return value

    # --- what requests ask, answered from memory when possible ---
    def authenticate(self, key: str) -> str | None:
        if not key or len(key) > 256:
            return None
        return self._remember(self._keys, hash_key(key), lambda: self.backend.authenticate(key))

    def resolve(self, tenant: str, task: str, ref: str | int | None = None) -> tuple[PromptHandle, VersionInfo]:
        key = (tenant, task, None if ref is None else str(ref))
        return self._remember(self._resolved, key, lambda: self.backend.resolve(tenant, task, ref))

    # --- writes: through to the backend, then invalidate before returning ---
    def _write(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        finally:
            self.invalidate("write")

    def create_tenant(self, name: str) -> str:
        return self._write(self.backend.create_tenant, name)

    def add_key(self, tenant: str) -> str:
        return self._write(self.backend.add_key, tenant)

    def revoke_keys(self, tenant: str) -> int:
        return self._write(self.backend.revoke_keys, tenant)

    def push(self, tenant: str, task: str, manifest: bytes, tensors: bytes, method: str) -> VersionInfo:
        return self._write(self.backend.push, tenant, task, manifest, tensors, method)

    def promote(self, tenant: str, task: str, ref: str | int | None = None,
                alias: str = DEFAULT_ALIAS) -> dict[str, Any]:
        return self._write(self.backend.promote, tenant, task, ref, alias)

    def rollback(self, tenant: str, task: str, alias: str = DEFAULT_ALIAS) -> dict[str, Any]:
        return self._write(self.backend.rollback, tenant, task, alias)

    # --- the rest goes straight to the backend ---
    def base_fingerprint(self) -> dict[str, Any] | None:
        return self.backend.base_fingerprint()

    def bind_base(self, fingerprint: dict[str, Any]) -> None:
        self.backend.bind_base(fingerprint)

    def tenants(self) -> list[dict[str, Any]]:
        return self.backend.tenants()

    def list_tasks(self, tenant: str) -> list[dict[str, Any]]:
        return self.backend.list_tasks(tenant)

    def read_manifest(self, handle: PromptHandle) -> bytes:
        return self.backend.read_manifest(handle)

    def read(self, handle: PromptHandle) -> tuple[bytes, bytes]:
        return self.backend.read(handle)

    def generation(self) -> int:
        return self.backend.generation()

    def watch(self, on_change: Callable[[str], None], stop: threading.Event) -> None:
        self.backend.watch(on_change, stop)

    def check(self) -> list[str]:
        return self.backend.check()

    def close(self) -> None:
        self.backend.close()
