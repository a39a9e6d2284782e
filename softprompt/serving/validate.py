"""Checks an uploaded artifact must pass before it becomes a version: data only, for this base, servable here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from softprompt import registry
from softprompt.errors import ArtifactError, ConfigError, InputError
from softprompt.serving.errors import Refused
from softprompt.training.task import Task

MAX_TEMPLATE_CHARS = 4096
MAX_CLASSES = 64
MAX_WORDS = 16
MAX_LENGTH = 1 << 16


@dataclass
class Checked:
    method: str
    extra: dict[str, Any] = field(default_factory=dict)
    prompted: Any = None
    """The loaded prompt when validated against a live base model (None when checked against a fingerprint)."""


def sniff(tensors: bytes) -> None:
    """Name the usual wrong uploads (pickles, torch.save zips, numpy files) before parsing anything."""
    kinds = [(b"PK\x03\x04", "a zip archive (torch.save output?)"), (b"\x93NUMPY", "a numpy .npy file")]
    for magic, what in kinds:
        if tensors.startswith(magic):
            raise ArtifactError(f"prompt.safetensors is {what}; only safetensors is accepted, re-save the prompt "
                                "with softprompt (pickles and other executable formats are never loaded)")
    if tensors[:1] == b"\x80" and tensors[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise ArtifactError("prompt.safetensors is a Python pickle; only safetensors is accepted (pickles can run "
                            "code and are never loaded); re-save the prompt with softprompt")
    if len(tensors) >= 9 and tensors[8:9] != b"{":
        raise ArtifactError("prompt.safetensors is not a safetensors file (no JSON header after the 8-byte length); "
                            "a renamed file of another format? Re-save the prompt with softprompt")


def embedding_only_methods() -> list[str]:
    return [n for n in registry.names() if registry.get(n).embedding_only]


def check_servable(method: str, embedding_only: bool) -> None:
    if embedding_only and not registry.get(method).embedding_only:
        raise Refused(
            f"this server runs in --embedding-only mode: a request may only change the model's input embeddings, "
            f"and method {method!r} changes the model's internal computation (attention keys/values or layer "
            f"outputs). Servable methods: {', '.join(embedding_only_methods())}. Serve this task on a server "
            "started without --embedding-only")


def check_extra(extra: Any) -> dict[str, Any]:
    """Validate the manifest extras serving uses: the task's template and verbalizer, as `softprompt train`
    saves them (`Task.to_extra`), parsed by the same code and held to serving's size limits."""
    if not isinstance(extra, dict):
        raise ArtifactError(f"manifest 'extra' must be an object, got {type(extra).__name__}")
    if extra.get("template") is None and extra.get("verbalizer") is None:
        return extra
    template = extra.get("template")
    source = template.get("source") if isinstance(template, dict) else None
    if isinstance(source, str) and len(source) > MAX_TEMPLATE_CHARS:  # before parsing it
        raise ArtifactError(f"extra.template is longer than {MAX_TEMPLATE_CHARS} characters ({len(source)})")
    try:
        task = Task.from_extra(extra)
    except (ConfigError, InputError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ArtifactError(f"the manifest's template/verbalizer cannot be used: {e}") from None
    problems = []
    max_length = extra.get("max_length", 256)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or not 1 <= max_length <= MAX_LENGTH:
        problems.append(f"extra.max_length={max_length!r}: must be an integer in [1, {MAX_LENGTH}]")
    if len(task.template.source) > MAX_TEMPLATE_CHARS:
        problems.append(f"extra.template is longer than {MAX_TEMPLATE_CHARS} characters")
    v = task.verbalizer
    if v is not None:
        if not 2 <= len(v.classes) <= MAX_CLASSES:
            problems.append(f"extra.verbalizer needs 2-{MAX_CLASSES} classes, has {len(v.classes)}")
        wide = [c for c, words in v.label_words.items() if len(words) > MAX_WORDS or len(c) > 64]
        if wide:
            problems.append(f"extra.verbalizer classes {wide}: at most {MAX_WORDS} words and 64-character labels")
    if problems:
        raise ArtifactError("; ".join(problems))
    return extra


def check_upload(manifest: bytes, tensors: bytes, *, base: Any = None, fingerprint: dict | None = None,
                 embedding_only: bool = False) -> Checked:
    """Validate an upload against a live base (full load) or a store's recorded base fingerprint.

    Raises ArtifactError / IncompatibleBaseError (bad or foreign artifact) or Refused (not servable here).
    """
    sniff(tensors)
    if base is None and fingerprint is None:
        raise ArtifactError("cannot validate the prompt: this store has no base model recorded yet; run "
                            "`softprompt serve` on it once or pass --base")
    try:
        if base is not None:
            import softprompt as sp

            prompted = sp.load_prompt_bytes(manifest, tensors, base)
            checked = Checked(prompted.method, prompted.extra, prompted)
        else:
            checked = _check_against_fingerprint(manifest, tensors, fingerprint)
    except ConfigError as e:
        raise ArtifactError(f"the manifest names an unknown method or an invalid config: {e}") from None
    except (KeyError, TypeError, AttributeError, ValueError) as e:  # fields of the wrong JSON type
        raise ArtifactError(f"manifest.json is malformed ({type(e).__name__}: {e}); re-save the prompt "
                            "with softprompt") from None
    check_servable(checked.method, embedding_only)
    check_extra(checked.extra)
    return checked


def _check_against_fingerprint(manifest: bytes, tensors: bytes, fingerprint: dict) -> Checked:
    """What `load_prompt_bytes` checks, with the model's sizes read from the fingerprint (no model loaded)."""
    from softprompt.artifacts.io import parse
    from softprompt.model.fingerprint import Facts

    art = parse(manifest, tensors, fingerprint)
    spec = registry.get(art.method)
    try:
        config = spec.config_cls.from_dict(art.manifest["config"])
    except (ConfigError, TypeError) as e:
        raise ArtifactError(f"the manifest's config is invalid for {art.method}: {e}") from None
    facts = Facts(**{k: fingerprint[k] for k in Facts.__dataclass_fields__})
    expected = spec.module_cls.expected_shapes(config, facts)
    actual = {k: tuple(v.shape) for k, v in art.tensors.items()}
    if expected != actual:
        raise ArtifactError(f"{art.method} tensors have shapes {actual}; this base model needs {expected}")
    return Checked(art.method, art.extra)
