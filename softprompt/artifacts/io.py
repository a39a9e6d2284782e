"""Save and load prompt artifacts: `prompt.safetensors` + `manifest.json` (+ a `README.md` card), nothing else.

Loading never unpickles or executes anything: the tensor file is parsed by safetensors (a JSON header plus
raw bytes), the manifest by `json`. Every check failure raises ArtifactError naming the cause and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from softprompt import safejson
from softprompt.errors import ArtifactError, IncompatibleBaseError
from softprompt.files import write_files  # noqa: F401  (re-exported: artifacts and checkpoints share it)
from softprompt.model.fingerprint import fingerprint_mismatch

SCHEMA = "softprompt.prompt"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
TENSORS = "prompt.safetensors"
README = "README.md"
"""The generated model card (artifacts/card.py): the one extra file a prompt directory may hold; never read."""
MAX_MANIFEST_BYTES = 1 << 20
ALLOWED_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def _version() -> str:
    from softprompt import __version__

    return __version__


@dataclass
class Artifact:
    """A parsed, validated artifact: the manifest and its tensors (on CPU, float32)."""

    manifest: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def method(self) -> str:
        return self.manifest["method"]

    @property
    def digest(self) -> str:
        return self.manifest["sha256"]


def serialize(method: str, config: dict[str, Any], tensors: dict[str, torch.Tensor], base_fingerprint: dict,
              extra: dict[str, Any] | None = None) -> tuple[bytes, bytes]:
    """-> (manifest bytes, safetensors bytes). The manifest records the tensor file's sha256."""
    from safetensors.torch import save

    cpu = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
    blob = save(cpu)
    manifest = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "library_version": _version(),
        "method": method,
        "config": config,
        "tensors": {k: {"shape": list(v.shape), "dtype": "float32"} for k, v in cpu.items()},
        "num_parameters": int(sum(v.numel() for v in cpu.values())),
        "base": base_fingerprint,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "extra": extra or {},
    }
    return json.dumps(manifest, indent=2, sort_keys=True).encode(), blob


def write_dir(path: str | Path, manifest: bytes, blob: bytes, card: str | None = None) -> Path:
    """Write an artifact directory atomically (with the README.md model card `card`, if given)."""
    files = {TENSORS: blob, MANIFEST: manifest}
    if card is not None:
        files[README] = card.encode()
    return write_files(path, files)


def read_json(raw: bytes, name: str, limit: int, hint: str = "") -> dict[str, Any]:
    """A size-limited JSON object from untrusted bytes (bounded depth and numbers, valid Unicode: see
    softprompt.safejson); ``name`` and ``hint`` go into the error messages."""
    if len(raw) > limit:
        raise ArtifactError(f"{name} is {len(raw)} bytes; at most {limit} are allowed")
    try:
        obj = safejson.loads(raw)
    except safejson.JsonLimitError as e:
        raise ArtifactError(f"{name} is not valid UTF-8 JSON ({e}){hint}") from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{name} must hold a JSON object{hint}")
    return obj


def parse(manifest: bytes, blob: bytes, base_fingerprint: dict | None = None) -> Artifact:
    """Validate and decode an artifact from bytes (used by the loader and by serving uploads)."""
    m = read_json(manifest, MANIFEST, MAX_MANIFEST_BYTES, "; re-save the prompt with softprompt")
    if m.get("schema") != SCHEMA:
        raise ArtifactError(f"{MANIFEST} is not a softprompt manifest (schema {m.get('schema')!r})")
    if m.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(f"unknown schema_version {m.get('schema_version')!r} (this library reads "
                            f"{SCHEMA_VERSION}); upgrade softprompt or re-save the prompt")
    types = {"method": str, "config": dict, "tensors": dict, "base": dict, "sha256": str}
    for key, typ in types.items():
        if not isinstance(m.get(key), typ):
            raise ArtifactError(f"{MANIFEST} lacks {key!r} or it is not a {typ.__name__}; re-save the prompt")
    if not isinstance(m.get("extra", {}), dict) or not all(
            isinstance(v, dict) and isinstance(v.get("shape"), list) for v in m["tensors"].values()):
        raise ArtifactError(f"{MANIFEST} has a malformed 'tensors' or 'extra' entry; re-save the prompt")
    if hashlib.sha256(blob).hexdigest() != m["sha256"]:
        raise ArtifactError(f"{TENSORS} does not match the digest in {MANIFEST}: the file is corrupted or was replaced")
    tensors = _decode_safetensors(blob)
    declared = {k: tuple(v["shape"]) for k, v in m["tensors"].items()}
    actual = {k: tuple(v.shape) for k, v in tensors.items()}
    if declared != actual:
        raise ArtifactError(f"tensor shapes {actual} differ from the manifest's {declared}")
    bad = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
    if bad:
        raise ArtifactError(f"tensor(s) {bad} hold NaN or inf values; retrain or restore a good checkpoint")
    if base_fingerprint is not None:
        diff = fingerprint_mismatch(m["base"], base_fingerprint)
        if diff:
            raise IncompatibleBaseError(
                f"this prompt was trained for another base model (differs in {', '.join(diff)}: "
                f"trained on {m['base'].get('model_type')} hidden={m['base'].get('hidden_size')}); "
                "load it on the base model it was trained for, or retrain it on this one")
    return Artifact(manifest=m, tensors=tensors, extra=m.get("extra") or {})


def safetensors_header(blob: bytes, name: str = TENSORS) -> dict[str, Any]:
    """The JSON header of a safetensors file, or ArtifactError if `blob` is not one (a pickle, say)."""
    if len(blob) < 8:
        raise ArtifactError(f"{name} is too short to be a safetensors file")
    header_len = int.from_bytes(blob[:8], "little")
    if header_len <= 0 or header_len > min(len(blob) - 8, 100_000_000):
        raise ArtifactError(f"{name} is not a safetensors file (bad header); only safetensors is accepted")
    try:
        header = safejson.loads(blob[8:8 + header_len])
    except safejson.JsonLimitError as e:
        raise ArtifactError(f"{name} is not a safetensors file (header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"{name} is not a safetensors file (header is not an object)")
    return header


def _decode_safetensors(blob: bytes) -> dict[str, torch.Tensor]:
    header = safetensors_header(blob)
    dtypes = {k: v.get("dtype") for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    odd = {k: d for k, d in dtypes.items() if d not in ALLOWED_DTYPES}
    if odd:
        raise ArtifactError(f"{TENSORS} holds tensors of unsupported dtype {odd}; use float32/bfloat16/float16")
    from safetensors.torch import load

    try:
        out = load(blob)
    except Exception as e:  # safetensors raises its own error types
        raise ArtifactError(f"{TENSORS} cannot be parsed as safetensors: {e}") from None
    return {k: v.float() for k, v in out.items()}


REQUIRED_FILES = (MANIFEST, TENSORS)
OPTIONAL_FILES: tuple[str, ...] = (README,)
"""Files a prompt directory may also hold, never read by the loader nor sent by push: the generated model card."""
MAX_TENSORS_BYTES = 1 << 30


def check_prompt_dir(path: str | Path) -> Path:
    """The one rule for a prompt directory, applied before any byte is read (load_prompt, `softprompt push`):
    REQUIRED_FILES (and OPTIONAL_FILES) only, each a regular file, no symbolic links, nothing else."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such prompt directory (a prompt is a directory with {MANIFEST} and {TENSORS})")
    entries = sorted(path.iterdir(), key=lambda p: p.name)
    names = [p.name for p in entries]
    allowed = REQUIRED_FILES + OPTIONAL_FILES
    extra = [n for n in names if n not in allowed]
    if extra:
        raise ArtifactError(f"{path} holds {extra}: a prompt holds only {' and '.join(allowed)} "
                            "(pickles and other files are never loaded or sent); remove them")
    links = [p.name for p in entries if p.is_symlink() or not p.is_file()]
    if links:
        raise ArtifactError(f"{path}: {links} are symbolic links or not regular files; a prompt directory holds its "
                            "own files (copy the real files in, or save the prompt again)")
    missing = [n for n in REQUIRED_FILES if n not in names]
    if missing:
        raise ArtifactError(f"{path} lacks {missing}; save the prompt with softprompt")
    return path


def _read_regular(path: Path, limit: int) -> bytes:
    """A regular file's bytes, opened without following a symbolic link (closes the check-then-open race)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise ArtifactError(f"{path}: cannot open it as a regular file ({e.strerror}); symbolic links are refused") \
            from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError(f"{path} is not a regular file")
        if st.st_size > limit:
            raise ArtifactError(f"{path} is {st.st_size} bytes; at most {limit} are allowed")
        return f.read(limit + 1)


def read_prompt_files(path: str | Path) -> tuple[bytes, bytes]:
    """(manifest.json bytes, prompt.safetensors bytes) of a prompt directory that passes `check_prompt_dir`."""
    path = check_prompt_dir(path)
    return _read_regular(path / MANIFEST, MAX_MANIFEST_BYTES), _read_regular(path / TENSORS, MAX_TENSORS_BYTES)


def read_dir(path: str | Path, base_fingerprint: dict | None = None) -> Artifact:
    """Read and validate an artifact directory; refuses any file that is not the manifest or the tensors."""
    manifest, tensors = read_prompt_files(path)
    return parse(manifest, tensors, base_fingerprint)
