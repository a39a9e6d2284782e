"""The runner: tensor preparation and forward passes for a batch whose rows carry different prompts.

It owns the frozen base model and is only called from the engine's single worker thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

import softprompt as sp
from softprompt.model.compat import cache_of
from softprompt.model.inject import PromptParts
from softprompt.serving.cache import Entry, parts_nbytes


@dataclass(frozen=True)
class Sampling:
    """Decoding settings shared by every row of one generate call (rows are grouped by them; seeds are per row)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0

    @classmethod
    def make(cls, temperature: float | None, top_p: float | None) -> Sampling:
        t = 1.0 if temperature is None else float(temperature)
        p = 1.0 if top_p is None else float(top_p)
        if t <= 0:  # temperature 0 is greedy decoding: every greedy row can share a batch
            return cls()
        return cls(True, t, p)


GREEDY = Sampling()


def _detach(parts: PromptParts) -> PromptParts:
    d = lambda t: None if t is None else t.detach()  # noqa: E731
    kv = None if parts.kv is None else (parts.kv[0].detach(), parts.kv[1].detach())
    if isinstance(parts.adapter, torch.nn.Module):
        parts.adapter.requires_grad_(False)
    return PromptParts(embeds=d(parts.embeds), kv=kv, adapter=parts.adapter, slots=d(parts.slots))


class Runner:
    def __init__(self, base: sp.Base, soft_prefix_cache: bool = False, ignore_eos: bool = False):
        self.base = base
        self.soft_prefix_cache = soft_prefix_cache
        """Serve input-embedding prompts as the K/V prefix their soft tokens produce (computed once per version)."""
        self.ignore_eos = ignore_eos
        """Generate max_tokens for every row, past end-of-sequence (benchmarks: equal work per request)."""

    @property
    def eos_token_id(self) -> int | None:
        tok = self.base.tokenizer
        return None if self.ignore_eos or tok is None else tok.eos_token_id

    # --- prompts ---
    @torch.no_grad()
    def load(self, manifest: bytes, tensors: bytes) -> Entry:
        """Validate and load an artifact, and compute its parts once (per-layer K/V prefixes included)."""
        prompted = sp.load_prompt_bytes(manifest, tensors, self.base)
        parts = _detach(prompted.parts(self.base))
        if self.soft_prefix_cache:
            parts = self._soft_prefix(parts)
        return Entry(parts=parts, method=prompted.method, extra=dict(prompted.extra), nbytes=parts_nbytes(parts))

    def _soft_prefix(self, parts: PromptParts) -> PromptParts:
        """Soft tokens that lead every row attend only to each other, so their per-layer keys/values are the same
        for every request: compute them once. Rows then read them as a K/V prefix at positions 0..n-1, exactly
        where the soft tokens sat, and get the same logits."""
        if parts.embeds is None or parts.kv is not None or parts.adapter is not None or parts.slots is not None:
            return parts
        n = parts.embeds.shape[0]
        embeds = parts.embeds[None].to(self.base.dtype)  # [1,n,H]
        mask = torch.ones(1, n, dtype=torch.long, device=embeds.device)
        cache = cache_of(self.base.backbone(inputs_embeds=embeds, attention_mask=mask, use_cache=True))
        if any(layer.keys.shape[2] != n for layer in cache.layers):  # beyond a sliding window: keep them as inputs
            return parts
        keys = torch.stack([layer.keys[0] for layer in cache.layers])  # [L,kvh,n,hd]
        values = torch.stack([layer.values[0] for layer in cache.layers])
        return PromptParts(kv=(keys, values))

    # --- text (the processor owns tokenizing; this is for engines driven without one) ---
    def decode(self, ids: Sequence[int]) -> str:
        return self.base.tokenizer.decode(list(ids), skip_special_tokens=True)

    # --- forward passes ---
    def generate(self, prompts: list[PromptParts | None], ids: list[list[int]], max_new_tokens: int,
                 sampling: Sampling, on_step: Callable[[list[int | None]], None] | None = None,
                 seeds: Sequence[int | None] | None = None) -> list[list[int]]:
        """One mixed batch: row b continues ids[b] with prompts[b] (None: the plain model), sampling with seeds[b]."""
        return sp.generate_ids(self.base, prompts, ids, max_new_tokens=max_new_tokens, do_sample=sampling.do_sample,
                               temperature=sampling.temperature, top_p=sampling.top_p,
                               seed=list(seeds) if seeds is not None else None,
                               eos_token_id=[] if self.ignore_eos else None, on_step=on_step)

    @torch.no_grad()
    def score(self, prompts: list[PromptParts | None], prefixes: list[list[int]],
              words: list[list[int]]) -> list[float]:
        """log p(words[b] | prefixes[b]) with prompts[b], for every candidate row b, in one forward pass."""
        seqs = [list(p) + list(w) for p, w in zip(prefixes, words)]
        ids, mask = sp.pad_batch(seqs)
        h, _ = sp.hidden_mixed(self.base, prompts, ids, mask)  # [B,T,H], every row ends at column T-1
        B, T, _ = h.shape
        K = max(len(w) for w in words)
        logp = torch.log_softmax(self.base.logits(h[:, T - 1 - K:T - 1]).float(), dim=-1)  # [B,K,V] predicts next
        target = torch.zeros(B, K, dtype=torch.long, device=h.device)
        valid = torch.zeros(B, K, dtype=torch.bool, device=h.device)
        for b, w in enumerate(words):  # right-align each word with the columns that predict it
            target[b, K - len(w):] = torch.tensor(w, dtype=torch.long)
            valid[b, K - len(w):] = True
        tok_logp = logp.gather(-1, target[..., None]).squeeze(-1)  # [B,K]
        return torch.where(valid, tok_logp, torch.zeros_like(tok_logp)).sum(-1).tolist()
