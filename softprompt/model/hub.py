"""Hugging Face Hub ids resolved from the user's local cache, the way transformers resolves them offline.

softprompt never downloads a model: `org/name` (optionally at a `revision`: a branch, tag or commit) is looked
up in the Hugging Face cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`) with
`local_files_only`, so there is never a network wait. An id that is not cached gets an error saying how to
fetch it once.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from softprompt.errors import InputError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
"""`name` or `org/name`, as the Hub spells repository ids."""


def looks_like_hub_id(source: str) -> bool:
    """True for `org/name` or `name` that is not an existing local path and not a .gguf file name."""
    return bool(HUB_ID.match(source)) and not source.endswith(".gguf") and not Path(source).exists()


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The local snapshot folder of `repo_id` at `revision` (default: the cached `main`), never downloading."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    cache = hub_cache_dir()
    at = f" at revision {revision!r}" if revision else ""
    try:
        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, FileNotFoundError, OSError) as e:
        raise InputError(
            f"base {repo_id!r}{at}: not in the Hugging Face cache {cache} ({type(e).__name__}); softprompt never "
            f"downloads models. Fetch it once with `hf download {repo_id}"
            f"{f' --revision {revision}' if revision else ''}` (or `huggingface-cli download {repo_id}`), "
            "or pass a local model directory"
        ) from None
    if not (path / "config.json").is_file():
        raise InputError(f"base {repo_id!r}{at}: the cached snapshot {path} has no config.json (a partial "
                         f"download?): run `hf download {repo_id}` again")
    return path
