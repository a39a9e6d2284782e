"""Initialisation of soft vectors from text, vocabulary samples, class labels, or random."""

from __future__ import annotations

from typing import Any

import torch

from softprompt.errors import ConfigError

# Sample only from the most frequent tokens, as Lester et al. (2021) do (5,000 most common).
VOCAB_SAMPLE_TOP = 5000


def _tile(ids: list[int], n: int) -> list[int]:
    return (ids * (n // len(ids) + 1))[:n]


def vocab_sample(base: Any, n: int, seed: int) -> list[int]:
    """n token ids sampled without replacement from the low ids (frequent tokens in BPE vocabularies)."""
    special = set(getattr(base.tokenizer, "all_special_ids", []) or [])
    top = min(VOCAB_SAMPLE_TOP, base.facts.vocab_size)
    g = torch.Generator().manual_seed(seed)
    pool = [i for i in torch.randperm(top, generator=g).tolist() if i not in special]
    return _tile(pool, n)


def init_token_ids(base: Any, config: Any, n: int) -> list[int]:
    """Token ids the soft tokens start from, for init in {text, vocab, labels}."""
    if config.init == "vocab":
        return vocab_sample(base, n, config.seed)
    if config.init == "text":
        ids = base.tokenizer(config.init_text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ConfigError([f"init_text={config.init_text!r} has no tokens"], "init")
        return _tile(ids, n)
    if config.init == "labels":
        ids: list[int] = []
        for word in config.init_labels:
            ids += base.tokenizer(" " + word.strip(), add_special_tokens=False)["input_ids"]
        if len(ids) >= n:
            return ids[:n]
        return ids + vocab_sample(base, n - len(ids), config.seed)
    raise ConfigError([f"init={config.init!r} has no token ids"], "init")


@torch.no_grad()
def init_embeddings(base: Any, config: Any, n: int) -> torch.Tensor:
    """[n,H] float32 vectors in the space of the embedding layer's output."""
    if config.init == "random":
        ref = base.embed(torch.tensor(vocab_sample(base, 256, config.seed), device=base.device)).float()
        g = torch.Generator().manual_seed(config.seed)
        return torch.randn(n, ref.shape[1], generator=g).to(base.device) * ref.std()
    ids = torch.tensor(init_token_ids(base, config, n), device=base.device)
    return base.embed(ids).float()
