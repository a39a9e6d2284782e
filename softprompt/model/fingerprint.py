"""Facts read off a loaded model, and the fingerprint every artifact records."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from softprompt.model.arch import check_kv_cache
from softprompt.model.compat import cache_of


@dataclass(frozen=True)
class Facts:
    """Sizes read from the loaded model (never configured by the user)."""

    model_type: str
    hidden_size: int
    num_layers: int
    vocab_size: int
    kv_heads: int
    head_dim: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def read_facts(model: nn.Module) -> Facts:
    """Read sizes; K/V shapes come from a real one-token prefill, so every architecture reports its own."""
    cfg = model.config.get_text_config()
    emb = model.get_input_embeddings()
    ids = torch.zeros(1, 1, dtype=torch.long, device=emb.weight.device)
    cache = cache_of(model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True))
    check_kv_cache(model, cache)
    k = cache.layers[0].keys  # [1, kv_heads, 1, head_dim]
    return Facts(
        model_type=cfg.model_type,
        hidden_size=emb.weight.shape[1],
        num_layers=len(cache.layers),
        vocab_size=emb.weight.shape[0],
        kv_heads=k.shape[1],
        head_dim=k.shape[3],
    )


@torch.no_grad()
def fingerprint_of(model: nn.Module, tokenizer: Any, facts: Facts) -> dict[str, Any]:
    """Architecture, sizes, a hash of the tokenizer vocabulary and of the embedding matrix.

    The embedding hash is taken over the bf16-rounded matrix so fp32 and bf16 loads of one model agree.
    """
    w = model.get_input_embeddings().weight.detach().to("cpu", torch.bfloat16).contiguous()
    emb_hash = hashlib.sha256(w.view(torch.int16).numpy().tobytes()).hexdigest()[:32]
    if tokenizer is not None:
        vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        tok_hash = hashlib.sha256("\n".join(f"{t}\t{i}" for t, i in vocab).encode()).hexdigest()[:32]
    else:
        tok_hash = None
    return {**facts.to_dict(), "tokenizer_sha256": tok_hash, "embedding_sha256": emb_hash}


def fingerprint_mismatch(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Names of the fingerprint fields that differ."""
    return [k for k in sorted(set(expected) | set(actual)) if expected.get(k) != actual.get(k)]
