"""The store: where tenants, API keys, tasks, immutable versions, aliases and the artifact bytes live.

One interface (`Store`), two backends:

    SqliteStore    (serving/store_sqlite.py)    a directory: SQLite (WAL) + content-addressed files; the default
    PostgresStore  (serving/store_postgres.py)  a PostgreSQL database (`postgresql://...`), shared by replicas

`open_store(where)` picks the backend from a path or a URL. Both keep the same promises: a version is written in
one transaction (a process killed at any instant leaves no half version), versions never change, an alias moves
atomically and remembers where it pointed, and nothing a client sends becomes a file path.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from softprompt.errors import IncompatibleBaseError, InputError
from softprompt.serving.errors import NotFound
from softprompt.serving.refs import version_ref

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
NO_PROMPT = "base"
"""The model name that selects the plain base model (no prompt); no task may take it."""
DEFAULT_ALIAS = "prod"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


@dataclass(frozen=True)
class PromptHandle:
    """What a request carries from admission to its last token: never re-resolved, so an alias move cannot
    change the prompt a running request uses."""

    tenant: str
    task: str
    version: int
    digest: str
    """sha256 of the version's manifest.json (which records the sha256 of its tensors)."""

    def __str__(self) -> str:
        return f"{self.task}@{self.version}"


@dataclass(frozen=True)
class VersionInfo:
    task: str
    version: int
    method: str
    digest: str
    tensors_sha256: str
    num_bytes: int
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "method": self.method, "digest": self.digest,
                "num_bytes": self.num_bytes, "created_at": self.created_at}


def check_name(kind: str, name: Any) -> str:
    """Validate a tenant / task / alias name (they never become paths, but are kept plain anyway)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InputError(f"{kind} name {name!r} is invalid: use 1-64 letters, digits, '-' or '_', starting with a "
                         "letter or digit (no '/', '.', spaces or control characters)")
    if kind == "task" and name == NO_PROMPT:
        raise InputError(f"task name {NO_PROMPT!r} is reserved for the plain base model; choose another name")
    if kind == "alias" and (name.isdigit() or name == "latest"):
        raise InputError(f"alias name {name!r} is reserved (digits name versions, 'latest' the newest version)")
    return name


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def parse_ref(ref: str | int | None) -> int | str | None:
    """A version reference -> a version number (int), 'latest', an alias name (str), or None (the default).

    The one place that reads references, for every backend.
    """
    wanted = version_ref(ref)  # ASCII-digit numbers in range, 'latest', or an alias name
    if wanted is None or isinstance(wanted, int) or wanted == "latest":
        return wanted
    return check_name("alias", wanted)


def check_same_base(location: str, bound: dict[str, Any], fingerprint: dict[str, Any]) -> None:
    """Refuse to serve the store at `location`, bound to base `bound`, with another base model `fingerprint`."""
    if bound != fingerprint:
        diff = sorted(k for k in set(bound) | set(fingerprint) if bound.get(k) != fingerprint.get(k))
        raise IncompatibleBaseError(
            f"the store {location} holds prompts for another base model (differs in {', '.join(diff)}); "
            "serve the base model it was made for, or use another --store")

def pick_version(task: str, ref: str | int | None, versions: Collection[int], aliases: Mapping[str, int]) -> int:
    """The version `ref` names among a task's `versions` and `aliases`.

    None means the 'prod' alias when it is set, else the newest version.
    """
    if not versions:
        raise NotFound(f"task {task!r} has no versions; push one first")
    wanted = parse_ref(ref)
    if wanted is None:
        version = aliases.get(DEFAULT_ALIAS, max(versions))
    elif wanted == "latest":
        version = max(versions)
    elif isinstance(wanted, int):
        version = wanted
    elif wanted in aliases:
        version = aliases[wanted]
    else:
        raise NotFound(f"task {task!r} has no alias {wanted!r}; promote a version to it first")
    if version not in versions:
        raise NotFound(f"task {task!r} has no version {version} (it has versions {min(versions)}-{max(versions)})")
    return version


OnChange = Callable[[str], None]
"""Called by `Store.watch` with why the store may have changed: 'notify', 'poll', 'recheck' or 'reconnect'; and
'watching' once, when the watch has read the change counter it compares against: a change that landed before then
is never reported, so whatever a caller remembered from the store before 'watching' may be stale."""


@runtime_checkable
class Store(Protocol):
    """What the server and the CLI need from a store. Safe to share between threads."""

    location: str
    """Where the store is, for messages (a directory, or a URL without its password)."""

    def base_fingerprint(self) -> dict[str, Any] | None:
        """The base model this store serves, once bound."""

    def bind_base(self, fingerprint: dict[str, Any]) -> None:
        """Record the base model on first use; refuse (IncompatibleBaseError) a store made for another base."""

    def create_tenant(self, name: str) -> str:
        """Create a tenant; returns its first API key (shown once, stored only as a hash)."""

    def add_key(self, tenant: str) -> str:
        """Another API key for `tenant`."""

    def revoke_keys(self, tenant: str) -> int:
        """Revoke every key of `tenant`; returns how many."""

    def tenants(self) -> list[dict[str, Any]]:
        """[{"tenant", "active_keys", "tasks"}] for every tenant."""

    def authenticate(self, key: str) -> str | None:
        """The tenant owning `key`, or None."""

    def push(self, tenant: str, task: str, manifest: bytes, tensors: bytes, method: str) -> VersionInfo:
        """Store an already validated artifact as the task's next version, in one transaction."""

    def list_tasks(self, tenant: str) -> list[dict[str, Any]]:
        """[{"task", "versions", "aliases"}] of one tenant."""

    def resolve(self, tenant: str, task: str, ref: str | int | None = None) -> tuple[PromptHandle, VersionInfo]:
        """task + (version number | alias | 'latest' | None) -> the immutable handle of one version."""

    def read_manifest(self, handle: PromptHandle) -> bytes:
        """The manifest.json bytes of a version, verified against its sha256."""

    def read(self, handle: PromptHandle) -> tuple[bytes, bytes]:
        """(manifest bytes, tensor bytes) of a version, each verified against its sha256."""

    def promote(self, tenant: str, task: str, ref: str | int | None = None,
                alias: str = DEFAULT_ALIAS) -> dict[str, Any]:
        """Point `alias` at a version (default: the newest) in one transaction; remembers where it pointed."""

    def rollback(self, tenant: str, task: str, alias: str = DEFAULT_ALIAS) -> dict[str, Any]:
        """Point `alias` back at the version it pointed to before its last promotion, atomically."""

    def generation(self) -> int:
        """A counter every change of keys, versions or aliases increases (in the same transaction)."""

    def watch(self, on_change: OnChange, stop: threading.Event) -> None:
        """Call `on_change` soon after another process changes the store, until `stop` is set (blocks)."""

    def check(self) -> list[str]:
        """Consistency problems (empty when sound): every version's bytes present and intact."""

    def close(self) -> None:
        """Close this thread's connection."""


def is_postgres_url(where: Any) -> bool:
    return isinstance(where, str) and where.startswith(POSTGRES_SCHEMES)


def open_store(where: str | Path | Store) -> Store:
    """A store from a directory (the embedded SQLite backend) or a `postgresql://` URL; a store is returned as is."""
    if is_postgres_url(where):
        from softprompt.serving.store_postgres import PostgresStore

        return PostgresStore(str(where))
    if isinstance(where, (str, Path)):
        from softprompt.serving.store_sqlite import SqliteStore

        return SqliteStore(where)
    if isinstance(where, Store):
        return where
    raise InputError(f"store={where!r}: give a directory or a postgresql://user@host/db URL")
