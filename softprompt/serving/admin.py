"""Task management on a store (a directory or a postgresql:// URL), for one tenant (what `softprompt
push/list/promote/rollback` do without --url). Uploads are validated like the server does, against the store's
base model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from softprompt.artifacts.io import read_prompt_files
from softprompt.serving.store import DEFAULT_ALIAS, Store, check_name, open_store
from softprompt.serving.validate import check_upload


def read_artifact_dir(path: str | Path) -> tuple[bytes, bytes]:
    """(manifest.json bytes, prompt.safetensors bytes) of a saved prompt directory, under the same directory rules
    as load_prompt (no symbolic links, no other files), checked before a byte is read."""
    return read_prompt_files(path)


class LocalTasks:
    """One tenant's tasks in a store."""

    def __init__(self, store: str | Path | Store, tenant: str, base: Any = None, embedding_only: bool = False):
        self.store = open_store(store)
        self.tenant, self.base, self.embedding_only = tenant, base, embedding_only

    def push(self, task: str, manifest: bytes, tensors: bytes, promote: str | None = None) -> dict[str, Any]:
        if promote:  # checked before anything is written: the push happens whole or not at all
            check_name("alias", promote)
        fingerprint = None if self.base is not None else self.store.base_fingerprint()
        checked = check_upload(manifest, tensors, base=self.base, fingerprint=fingerprint,
                               embedding_only=self.embedding_only)
        if self.base is not None:
            self.store.bind_base(self.base.fingerprint)
        info = self.store.push(self.tenant, task, manifest, tensors, checked.method)
        out = {"task": task, "version": info.version, "method": info.method, "digest": info.digest,
               "model": f"{task}@{info.version}"}
        if promote:
            out["promoted"] = self.promote(task, info.version, promote)
        return out

    def list(self) -> list[dict[str, Any]]:
        return self.store.list_tasks(self.tenant)

    def promote(self, task: str, version: str | int | None = None, alias: str = DEFAULT_ALIAS) -> dict[str, Any]:
        return self.store.promote(self.tenant, task, version, alias)

    def rollback(self, task: str, alias: str = DEFAULT_ALIAS) -> dict[str, Any]:
        return self.store.rollback(self.tenant, task, alias)
