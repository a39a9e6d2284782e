"""Content-addressed files on local disk: a file is named by the sha256 of its bytes.

A write goes to a temp file, is fsynced, then renamed into place (atomic on POSIX) and the directory fsynced,
so a crash at any instant leaves either no file or the whole file under its name, never a half file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

from softprompt.errors import ArtifactError

_HEX = set("0123456789abcdef")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobStore:
    """`root/ab/abcdef...` holds the bytes whose sha256 is `abcdef...`; `root/../tmp` holds writes in progress."""

    def __init__(self, root: Path, tmp: Path):
        self.root, self.tmp = Path(root), Path(tmp)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def is_digest(name: str) -> bool:
        return len(name) == 64 and set(name) <= _HEX

    def path(self, digest: str) -> Path:
        if not self.is_digest(digest):
            raise ArtifactError(f"{digest!r} is not a sha256 digest")
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        """Store `data` durably; returns its sha256. Writing bytes already stored is a no-op."""
        digest = sha256_hex(data)
        final = self.path(digest)
        if final.exists() and sha256_hex(final.read_bytes()) == digest:
            return digest  # already stored intact (a damaged copy is replaced below)
        final.parent.mkdir(exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, final)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)
        return digest

    def get(self, digest: str) -> bytes:
        """The stored bytes, verified against their name (a damaged file raises ArtifactError)."""
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"blob {digest[:12]} is missing from the store") from None
        if sha256_hex(data) != digest:
            raise ArtifactError(f"blob {digest[:12]} is damaged on disk (its bytes no longer match its sha256)")
        return data

    def clean_tmp(self, older_than_s: float = 600.0) -> int:
        """Remove temp files left by writers that died (older than `older_than_s`). Returns how many."""
        n = 0
        cutoff = time.time() - older_than_s
        for p in self.tmp.glob(".tmp-*"):
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    n += 1
            except FileNotFoundError:
                pass
        return n
