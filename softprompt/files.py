"""Atomic directory writes, shared by prompt artifacts and training checkpoints (a layer both may import)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def write_files(path: str | Path, files: dict[str, bytes]) -> Path:
    """Write a directory of files atomically: a fsynced temp dir renamed into place, so a crash at any
    moment leaves either the old directory or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
