"""Greedy / sampled generation over a mixed batch (each row its own prompt), with or without a K/V cache."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

from softprompt.errors import InputError
from softprompt.model.compat import cache_kw, cache_of
from softprompt.model.hooks import adapter_host
from softprompt.model.inject import attention_masks, build_layout, pad_batch, resolve_parts, run_backbone


def _generators(base: Any, seed: int | Sequence[int | None] | None, rows: int) -> list[torch.Generator | None]:
    """None or an int: one generator (or the global RNG) for the whole batch; a sequence: one per row."""
    if seed is None or isinstance(seed, int):
        gen = None if seed is None else torch.Generator(device=base.device).manual_seed(seed)
        return [gen] * rows
    seeds = list(seed)
    if len(seeds) != rows:
        raise InputError(f"got {len(seeds)} seeds for {rows} rows")
    return [None if s is None else torch.Generator(device=base.device).manual_seed(s) for s in seeds]


def _pick(logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float,
          gens: list[torch.Generator | None]) -> torch.Tensor:
    """logits [B,V] -> next token ids [B]; row b draws from gens[b] (None: the global RNG)."""
    if not do_sample or temperature <= 0:
        return logits.argmax(-1)
    z = logits.float() / temperature  # [B,V]
    if not torch.isfinite(z).all():  # a tiny temperature overflows: the same softmax, shifted so the max is 0
        z = (logits.double() - logits.double().amax(-1, keepdim=True)) / temperature  # float64: t may be 5e-324
    probs = torch.softmax(z, dim=-1)
    if top_p < 1.0:
        sp, si = probs.sort(-1, descending=True)
        keep = sp.cumsum(-1) - sp < top_p  # always keeps the most likely token
        sp = sp * keep
        probs = torch.zeros_like(probs).scatter(-1, si, sp)
    probs = probs / probs.sum(-1, keepdim=True)
    if all(g is gens[0] for g in gens):  # one generator (or the global RNG) draws for the whole batch
        return torch.multinomial(probs, 1, generator=gens[0]).squeeze(-1)
    return torch.cat([torch.multinomial(probs[b:b + 1], 1, generator=g)[:, 0] for b, g in enumerate(gens)])


@torch.no_grad()
def generate_ids(
    base: Any,
    prompts: Sequence[Any],
    token_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 20,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_token_id: int | Sequence[int] | None = None,
    use_cache: bool = True,
    seed: int | Sequence[int | None] | None = None,
    on_step: Callable[[list[int | None]], None] | None = None,
) -> list[list[int]]:
    """Generate for each row `token_ids[b]` with `prompts[b]`; returns the new token ids per row.

    `on_step` receives, after each step, the new token of every row (None for rows already finished):
    the hook streaming uses. Sampling seeds: an int seeds one generator for the whole batch (the same batch samples
    the same tokens); a sequence gives each row its own generator (None: that row draws from the global RNG), so
    a seeded row's tokens do not depend on its batch mates.
    """
    if len(prompts) != len(token_ids):
        raise InputError(f"got {len(prompts)} prompts for {len(token_ids)} rows")
    if max_new_tokens < 0:
        raise InputError(f"max_new_tokens={max_new_tokens}: must be >= 0")
    if any(len(s) == 0 for s in token_ids):
        raise InputError("a row has no tokens: every row needs at least one token")
    if eos_token_id is None:
        eos_token_id = base.tokenizer.eos_token_id if base.tokenizer is not None else None
    eos = set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or []))
    gens = _generators(base, seed, len(token_ids)) if do_sample else []
    parts = resolve_parts(base, prompts)
    B = len(token_ids)
    out: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    if max_new_tokens == 0:
        return out
    seqs = [list(s) for s in token_ids]
    ids, mask = pad_batch(seqs)
    layout = build_layout(base, parts, ids, mask)
    res = run_backbone(base, layout, use_cache=use_cache)
    logits = base.logits(res.last_hidden_state[:, -1])  # content ends at the last column in every row
    attn, pos, cache = layout.attention_mask, layout.position_ids[:, -1], cache_of(res)
    key_pos, key_valid = layout.key_pos, layout.key_valid
    routes = layout.routes
    for step in range(max_new_tokens):
        nxt = _pick(logits, do_sample, temperature, top_p, gens)
        emitted: list[int | None] = []
        for b in range(B):
            if done[b]:
                emitted.append(None)
                continue
            tok = int(nxt[b])
            out[b].append(tok)
            seqs[b].append(tok)
            emitted.append(tok)
            if tok in eos:
                done[b] = True
        if on_step is not None:
            on_step(emitted)
        if all(done) or step == max_new_tokens - 1:
            break
        if use_cache:
            pos = pos + 1
            attn = torch.cat([attn, attn.new_ones(B, 1)], dim=1)
            mask = attn
            if base.sliding_window:  # position-based masks (see inject.attention_masks)
                key_pos = torch.cat([key_pos, pos[:, None]], dim=1)
                key_valid = torch.cat([key_valid, key_valid.new_ones(B, 1)], dim=1)
                mask = attention_masks(base, pos[:, None], key_pos, key_valid)
            with adapter_host(base).active(routes) if routes else contextlib.nullcontext():
                res = base.backbone(inputs_embeds=base.embed(nxt[:, None].to(base.device)), attention_mask=mask,
                                    position_ids=pos[:, None], use_cache=True, **cache_kw(base.backbone, cache))
            cache = cache_of(res)
            logits = base.logits(res.last_hidden_state[:, -1])
        else:
            ids, mask = pad_batch(seqs)
            layout = build_layout(base, parts, ids, mask)
            logits = base.logits(run_backbone(base, layout).last_hidden_state[:, -1])
    return out
