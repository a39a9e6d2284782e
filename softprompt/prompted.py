"""The public handle on a prompt attached to a frozen base: `attach`, `load_prompt`, `Prompted`.

A `Prompted` owns only the prompt's parameters; the base model is shared (never a submodule), so
`prompted.parameters()` is exactly what an optimizer should train.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from softprompt import registry
from softprompt.artifacts.card import model_card
from softprompt.artifacts.io import Artifact, parse, read_dir, serialize, write_dir
from softprompt.errors import ArtifactError, ConfigError, InputError
from softprompt.model.base import Base
from softprompt.model.generate import generate_ids
from softprompt.model.inject import forward_mixed, pad_batch


class Prompted(nn.Module):
    """A prompt (any method) attached to a frozen base model."""

    def __init__(self, base: Base, prompt: nn.Module, extra: dict[str, Any] | None = None):
        super().__init__()
        object.__setattr__(self, "base", base)  # shared, not a submodule
        self.prompt = prompt.to(base.device)
        self.extra: dict[str, Any] = dict(extra or {})
        """Manifest extras saved with the prompt (template, verbalizer, compression stats, ...)."""

    @property
    def config(self) -> Any:
        return self.prompt.config

    @property
    def method(self) -> str:
        return type(self.prompt.config).method

    def parts(self, base: Base | None = None):
        return self.prompt.parts(self.base if base is None else base)

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, return_dict: bool | None = None) -> Any:
        """Logits [B,L,V] for the caller's real positions only (no virtual positions; pads are zero).

        With `labels` [B,L] (or return_dict=True) a `transformers` CausalLMOutput(loss, logits) instead, the way
        Hugging Face causal LMs answer: the loss is the mean cross-entropy of position t predicting labels[t+1],
        over the labels that are not negative (-100, and soft-slot placeholders, are ignored)."""
        logits = forward_mixed(self.base, [self] * input_ids.shape[0], input_ids, attention_mask)
        if labels is None and not return_dict:
            return logits
        from transformers.modeling_outputs import CausalLMOutput

        return CausalLMOutput(loss=None if labels is None else causal_lm_loss(logits, labels), logits=logits)

    def generate(self, texts: Sequence[str] | str, max_new_tokens: int = 20, **kwargs: Any) -> list[str]:
        """Generate a continuation for each text (greedy unless do_sample=True)."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        out = generate_mixed(self.base, [self] * len(texts), texts, max_new_tokens=max_new_tokens, **kwargs)
        return out

    def save(self, path: str | Path, **extra: Any) -> Path:
        """Write `prompt.safetensors` + `manifest.json` (kilobytes) and a README.md model card atomically
        to the directory `path`. Keyword arguments go into the manifest's `extra` (metrics appear in the card)."""
        manifest, blob = self.to_bytes(**extra)
        card = model_card(json.loads(manifest), self.base.name, len(blob))
        return write_dir(path, manifest, blob, card)

    def save_pretrained(self, path: str | Path, **extra: Any) -> Path:
        """Alias of `save`, under the name Hugging Face users look for."""
        return self.save(path, **extra)

    @classmethod
    def from_pretrained(cls, path: str | Path, base: Base) -> Prompted:
        """Alias of `sp.load_prompt(path, base)`: load a saved prompt directory onto `base`."""
        return load_prompt(path, base)

    def to_bytes(self, **extra: Any) -> tuple[bytes, bytes]:
        return serialize(self.method, self.config.to_dict(), self.prompt.export_tensors(), self.base.fingerprint,
                         {**self.extra, **extra})


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: logits [B,L,V] at t against labels [B,L] at t+1, negative labels ignored."""
    if labels.shape != logits.shape[:2]:
        raise InputError(f"labels have shape {tuple(labels.shape)}; they must match input_ids, "
                         f"{tuple(logits.shape[:2])}")
    target = labels[:, 1:].to(logits.device).long()  # [B,L-1]
    target = target.masked_fill(target < 0, -100)
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), target.flatten(), ignore_index=-100)


class TrainerModel(nn.Module):
    """A `Prompted` as `transformers.Trainer` expects a model (see README "Training with transformers.Trainer").

    forward(input_ids, attention_mask, labels) -> CausalLMOutput with the loss; its parameters are exactly the
    prompt's (the frozen base is not a submodule, so it stays where it was loaded and is never optimised).
    `config` is a small stand-in for Trainer's `model.config.use_cache = ...` (the prompt's own config is frozen).
    Trainer's `save_model` writes model.safetensors with the soft parameters; `prompted.save(dir)` writes the
    softprompt artifact (safetensors + manifest) that `load_prompt` and the server read.
    """

    def __init__(self, prompted: Prompted):
        super().__init__()
        self.prompted = prompted
        self.config = _TrainerFacts()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> Any:
        return self.prompted(input_ids, attention_mask, labels=labels, return_dict=True)


class _TrainerFacts:
    """The attributes Trainer reads or sets on `model.config`; nothing of it reaches the frozen base."""

    use_cache = False


def attach(base: Base, config: Any) -> Prompted:
    """Create a fresh prompt of the method `config` names, initialised on `base`."""
    if not isinstance(base, Base):
        raise InputError(f"attach needs a base from sp.load_base(...), got {type(base).__name__}")
    spec = registry.for_config(config)
    return Prompted(base, spec.module_cls.create(config, base))


def from_artifact(art: Artifact, base: Base) -> Prompted:
    try:
        spec = registry.get(art.method)
    except ConfigError:
        raise ArtifactError(f"the manifest names an unknown method {art.method!r}; known: "
                            f"{', '.join(registry.names())} (a newer softprompt may be needed)") from None
    try:
        config = spec.config_cls.from_dict(art.manifest["config"])
    except (ConfigError, TypeError) as e:
        raise ArtifactError(f"the manifest's config is invalid for {art.method}: {e}") from None
    expected = spec.module_cls.expected_shapes(config, base.facts)
    actual = {k: tuple(v.shape) for k, v in art.tensors.items()}
    if expected != actual:
        raise ArtifactError(f"{art.method} tensors have shapes {actual}; this base model needs {expected}")
    tensors = {k: v.to(base.device) for k, v in art.tensors.items()}
    return Prompted(base, spec.module_cls.from_tensors(config, tensors), art.extra)


def load_prompt(path: str | Path, base: Base) -> Prompted:
    """Load a saved prompt onto `base`; refuses other base models, bad shapes, non-finite values, non-safetensors."""
    return from_artifact(read_dir(path, base.fingerprint), base)


def load_prompt_bytes(manifest: bytes, blob: bytes, base: Base) -> Prompted:
    return from_artifact(parse(manifest, blob, base.fingerprint), base)


def generate_mixed(base: Base, prompts: Sequence[Any], texts: Sequence[str], *, max_new_tokens: int = 20,
                   skip_special_tokens: bool = True, **kwargs: Any) -> list[str]:
    """Generate for each text with its own prompt (None: plain model) in one batch; returns the new text."""
    if len(texts) == 0:
        raise InputError("no texts to generate from")
    ids = base.encode(list(texts))
    out = generate_ids(base, prompts, ids, max_new_tokens=max_new_tokens, **kwargs)
    return [base.tokenizer.decode(o, skip_special_tokens=skip_special_tokens) for o in out]


__all__ = ["Prompted", "TrainerModel", "attach", "causal_lm_loss", "load_prompt", "load_prompt_bytes", "generate_mixed",
           "forward_mixed", "pad_batch"]
