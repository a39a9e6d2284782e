"""The injection layer: one forward whose rows carry different prompts.

Every method reduces to `PromptParts`: soft vectors spliced at the input embeddings, per-layer key/value
prefixes, and/or adapter deltas. A batch is re-packed left-aligned so each row reads

    [pad ... pad | soft_1..soft_e | x_1 .. x_len]      input embeddings, width T
    [kv_1 .. kv_k | masked ...]                        per-layer K/V prefix slots, width P

Soft tokens always sit next to the content (never in front of pads). Positions count from the row's own
K/V prefix length: kv slots take 0..k-1, soft tokens k..k+e-1, the content follows. A row therefore gets
exactly the logits it would get alone, whatever the other rows carry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from softprompt.errors import InputError
from softprompt.model.compat import cache_kw
from softprompt.model.hooks import adapter_host


@dataclass
class PromptParts:
    """What one prompt adds to a forward pass."""

    embeds: torch.Tensor | None = None
    """[n_embed, H] vectors in the space of the embedding layer's output."""
    kv: tuple[torch.Tensor, torch.Tensor] | None = None
    """(keys, values), each [num_layers, kv_heads, n_kv, head_dim], as the attention cache holds them."""
    adapter: Any = None
    """An object with `delta(layer, site, h)`, added to attention/MLP outputs (changes the code path)."""
    slots: torch.Tensor | None = None
    """[K,H] soft vectors placed anywhere in the input: a token id -(k+1) stands for slots[k] (hybrid templates)."""

    @property
    def n_embed(self) -> int:
        return 0 if self.embeds is None else self.embeds.shape[0]

    @property
    def n_kv(self) -> int:
        return 0 if self.kv is None else self.kv[0].shape[2]

    @property
    def embedding_only(self) -> bool:
        return self.kv is None and self.adapter is None

    def num_virtual_tokens(self) -> int:
        return self.n_embed + self.n_kv


def resolve_parts(base: Any, prompts: Sequence[Any]) -> list[PromptParts | None]:
    """Turn each entry (None, PromptParts, or anything with `.parts(base)`) into PromptParts, once per object."""
    done: dict[int, PromptParts | None] = {}
    out = []
    for p in prompts:
        if id(p) not in done:
            done[id(p)] = p if (p is None or isinstance(p, PromptParts)) else p.parts(base)
        out.append(done[id(p)])
    return out


@dataclass
class Layout:
    """Where each row's pieces sit in the packed batch."""

    inputs_embeds: torch.Tensor  # [B,T,H]
    attention_mask: torch.Tensor  # [B,P+T]
    position_ids: torch.Tensor  # [B,T]
    cache: Any  # DynamicCache with P prefix slots, or None
    lengths: torch.Tensor  # [B] real tokens per row
    order: torch.Tensor  # [B,L] original column of each left-packed token column
    width: int  # L, the caller's input width
    routes: list  # adapter routing for AdapterHost
    key_pos: torch.Tensor  # [B,P+T] position of every key column (prefix slots then inputs)
    key_valid: torch.Tensor  # [B,P+T] bool: the column is a real key (not padding)


def prompt_groups(parts: Sequence[PromptParts | None], attr: str) -> tuple[list[PromptParts], torch.Tensor]:
    """Distinct prompts that have `attr`, and each row's index into them (-1: none)."""
    uniq: dict[int, int] = {}
    members: list[PromptParts] = []
    gid = []
    for p in parts:
        if p is None or getattr(p, attr) is None:
            gid.append(-1)
            continue
        if id(p) not in uniq:
            uniq[id(p)] = len(members)
            members.append(p)
        gid.append(uniq[id(p)])
    return members, torch.tensor(gid, dtype=torch.long)


def _pad_stack(tensors: list[torch.Tensor], dim: int) -> torch.Tensor:
    n = max(t.shape[dim] for t in tensors)
    out = []
    for t in tensors:
        if t.shape[dim] < n:
            shape = list(t.shape)
            shape[dim] = n - t.shape[dim]
            t = torch.cat([t, t.new_zeros(shape)], dim=dim)
        out.append(t)
    return torch.stack(out)


def _left_pack(input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move each row's real tokens to the right end, keeping their order. -> (packed ids [B,L], order [B,L])."""
    order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)  # pads first, then tokens in order
    return input_ids.gather(1, order), order


def _place_slots(x: torch.Tensor, ids: torch.Tensor, parts: list[PromptParts | None]) -> torch.Tensor:
    """Replace placeholder ids -(k+1) by the row's slots[k]."""
    is_slot = ids < 0  # [B,T]
    if not bool(is_slot.any()):
        return x
    groups, gid = prompt_groups(parts, "slots")
    gid = gid.to(ids.device)
    missing = is_slot.any(1) & (gid < 0)
    if bool(missing.any()):
        raise InputError("negative token ids (soft-slot placeholders) in a row whose prompt has no soft slots")
    table = _pad_stack([p.slots for p in groups], 0)  # [G,K,H] in the prompt's dtype
    n_slots = torch.tensor([p.slots.shape[0] for p in groups], device=ids.device)[gid.clamp(min=0)]  # [B]
    k = -ids - 1
    if bool((is_slot & (k >= n_slots[:, None])).any()):
        raise InputError("a soft-slot placeholder id refers past the row's prompt slots; render inputs with the "
                         "prompt's own template")
    k = k.clamp(0, table.shape[1] - 1)
    vecs = table[gid.clamp(min=0)[:, None], k].to(x.dtype)  # [B,T,H]; cast after the gather, whose backward
    # then sums each vector's gradient over rows in the prompt's own precision
    return torch.where(is_slot[..., None], vecs, x)


def build_layout(base: Any, parts: list[PromptParts | None], input_ids: torch.Tensor,
                 attention_mask: torch.Tensor | None = None) -> Layout:
    """Pack a batch of rows, each with its own prompt parts (or None), for one backbone call."""
    if input_ids.dim() != 2:
        raise InputError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
    B, L = input_ids.shape
    if len(parts) != B:
        raise InputError(f"got {len(parts)} prompts for {B} rows: pass one entry (or None) per row")
    dev = base.device
    input_ids = input_ids.to(dev)
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(dev)
    lengths = mask.sum(1)
    if (lengths == 0).any():
        raise InputError("a row has no tokens (attention_mask all zero): every row needs at least one token")

    emb_groups, emb_gid = prompt_groups(parts, "embeds")
    kv_groups, kv_gid = prompt_groups(parts, "kv")
    emb_gid, kv_gid = emb_gid.to(dev), kv_gid.to(dev)
    n_e = torch.tensor([p.n_embed if p is not None else 0 for p in parts], device=dev)
    n_kv = torch.tensor([p.n_kv if p is not None else 0 for p in parts], device=dev)

    T = int((lengths + n_e).max())
    packed, order = _left_pack(input_ids, mask)
    if T >= L:
        ids_T = torch.cat([packed.new_zeros(B, T - L), packed], dim=1)
    else:
        ids_T = packed[:, L - T:]
    x = base.embed(ids_T.clamp(min=0))  # [B,T,H]
    x = _place_slots(x, ids_T, parts)

    t = torch.arange(T, device=dev)
    start = T - lengths - n_e  # [B] first non-pad column
    if emb_groups:
        table = _pad_stack([p.embeds for p in emb_groups], 0)  # [G,N,H] in the prompt's dtype (fp32)
        j = t[None, :] - start[:, None]  # [B,T] index into the row's soft tokens
        is_soft = (j >= 0) & (j < n_e[:, None])
        # gather, then cast: the gather's backward sums over rows in fp32, not in a bf16 base's dtype
        soft = table[emb_gid.clamp(min=0)[:, None], j.clamp(0, table.shape[1] - 1)].to(x.dtype)  # [B,T,H]
        x = torch.where(is_soft[..., None], soft, x)

    in_mask = (t[None, :] >= start[:, None]).long()  # [B,T]
    position_ids = (n_kv[:, None] + t[None, :] - start[:, None]).clamp(min=0)

    cache = None
    key_pos, key_valid = position_ids, in_mask.bool()
    if kv_groups:
        keys = _pad_stack([p.kv[0] for p in kv_groups], 2)  # [G,Ly,kvh,P,hd], padded along n
        vals = _pad_stack([p.kv[1] for p in kv_groups], 2)
        P = keys.shape[3]
        rows = kv_gid.clamp(min=0)
        if len(kv_groups) == 1 and bool((kv_gid == 0).all()):
            keys = keys.expand(B, *keys.shape[1:])  # one prompt for all rows: no copy
            vals = vals.expand(B, *vals.shape[1:])
        else:
            keys, vals = keys[rows], vals[rows]  # [B,Ly,kvh,P,hd]
        keys, vals = keys.to(x.dtype), vals.to(x.dtype)  # after the row gather (fp32 gradient sums)
        cache = new_cache(base)
        for layer in range(keys.shape[1]):
            cache.update(keys[:, layer], vals[:, layer], layer)
        slot = torch.arange(P, device=dev)[None, :].expand(B, P)
        kv_mask = (slot < n_kv[:, None]).long()
        in_mask = torch.cat([kv_mask, in_mask], dim=1)
        key_pos, key_valid = torch.cat([slot, position_ids], dim=1), in_mask.bool()

    routes = []
    ad_groups, ad_gid = prompt_groups(parts, "adapter")
    for g, p in enumerate(ad_groups):
        rows = (ad_gid == g).nonzero().flatten().to(dev)
        routes.append((None if len(rows) == B else rows, p.adapter))

    return Layout(x, in_mask, position_ids, cache, lengths, order, L, routes, key_pos, key_valid)


def new_cache(base: Any) -> Any:
    """An empty K/V cache. Models with sliding layers get one built without a config, which never drops
    entries: their windows are applied by position-based masks instead (see `attention_masks`)."""
    from transformers import DynamicCache

    return DynamicCache() if base.sliding_window else DynamicCache(config=base.model.config)


def attention_masks(base: Any, q_pos: torch.Tensor, key_pos: torch.Tensor, key_valid: torch.Tensor) -> Any:
    """Additive 4D masks [B,1,Tq,K] built from positions, not columns, for models with sliding layers.

    A query sees valid keys at positions <= its own and, in sliding layers, within the window. Hugging Face
    measures windows in packed columns, which the padding of a long neighbour would stretch. Each query also
    sees its own column, so pad queries never have an empty row.
    """
    B, Tq = q_pos.shape
    K = key_pos.shape[1]
    allowed = key_valid[:, None, :] & (key_pos[:, None, :] <= q_pos[:, :, None])  # [B,Tq,K]
    own = torch.zeros(Tq, K, dtype=torch.bool, device=q_pos.device)
    own[torch.arange(Tq), torch.arange(K - Tq, K)] = True

    def additive(a: torch.Tensor) -> torch.Tensor:
        a = a | own
        out = torch.zeros(a.shape, dtype=base.dtype, device=a.device)
        return out.masked_fill(~a, torch.finfo(base.dtype).min)[:, None]

    full = additive(allowed)
    sliding = additive(allowed & (q_pos[:, :, None] - key_pos[:, None, :] < base.sliding_window))
    if base.mask_types is None:
        return sliding
    return {t: (sliding if t == "sliding_attention" else full) for t in base.mask_types}


def run_backbone(base: Any, layout: Layout, *, use_cache: bool = False) -> Any:
    """One backbone call over a packed layout -> HF output (last_hidden_state [B,T,H], its K/V cache)."""
    ctx = adapter_host(base).active(layout.routes) if layout.routes else contextlib.nullcontext()
    mask, cache = layout.attention_mask, layout.cache
    if base.sliding_window:
        mask = attention_masks(base, layout.position_ids, layout.key_pos, layout.key_valid)
        if cache is None and use_cache:
            cache = new_cache(base)
    with ctx:
        return base.backbone(inputs_embeds=layout.inputs_embeds, attention_mask=mask,
                             position_ids=layout.position_ids, use_cache=use_cache, **cache_kw(base.backbone, cache))


def unpack(layout: Layout, h: torch.Tensor) -> torch.Tensor:
    """Packed hidden states [B,T,H] -> the caller's layout [B,L,H] (pad positions zero)."""
    B, T, H = h.shape
    L = layout.width
    h_L = h[:, T - L:] if T >= L else torch.cat([h.new_zeros(B, L - T, H), h], dim=1)
    real = (torch.arange(L, device=h.device)[None, :] >= (L - layout.lengths)[:, None])  # [B,L] packed cols
    h_L = h_L * real[..., None].to(h.dtype)
    out = torch.zeros_like(h_L)
    return out.scatter(1, layout.order[..., None].expand(-1, -1, H), h_L)


def hidden_mixed(base: Any, prompts: Sequence[Any], input_ids: torch.Tensor,
                 attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, Layout]:
    """Final hidden states of the packed batch [B,T,H] (content ends at column T-1 in every row)."""
    layout = build_layout(base, resolve_parts(base, prompts), input_ids, attention_mask)
    out = run_backbone(base, layout)
    return out.last_hidden_state, layout


def forward_mixed(base: Any, prompts: Sequence[Any], input_ids: torch.Tensor,
                  attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [B,L,V] at the caller's real token positions; row b uses prompts[b] (None: plain model).

    Pad positions hold zeros. Each row's logits equal those of running it alone with its own prompt.
    """
    h, layout = hidden_mixed(base, prompts, input_ids, attention_mask)
    return base.logits(unpack(layout, h))


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int = 0, side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (ids [B,L], mask [B,L]) padded on `side`."""
    if not seqs:
        raise InputError("empty batch")
    L = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        if side == "left":
            ids[i, L - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, L - len(s):] = 1
        else:
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
    return ids, mask


def row_embeds(base: Any, parts: PromptParts | None, ids: Sequence[int]) -> torch.Tensor:
    """One row's own input embeddings [n_embed + len(ids), H]: its soft tokens, then its tokens (soft-slot
    placeholders -(k+1) replaced by the prompt's slots[k]), in the model's dtype: what `build_layout` feeds."""
    t = torch.tensor([list(ids)], dtype=torch.long, device=base.device)  # [1,L]
    x = _place_slots(base.embed(t.clamp(min=0)), t, [parts])[0]  # [L,H]
    if parts is not None and parts.embeds is not None:
        x = torch.cat([parts.embeds.to(device=x.device, dtype=x.dtype), x], dim=0)
    return x
