"""One backbone forward over the KV pool, for rows that each feed a few new tokens (a prefill chunk or one decode
token) and carry their own prompt parts.

The model's own attention runs unchanged (eager / sdpa, GQA, soft-capping ...): what it receives as its cache is
a `PoolCache`, whose `update` writes the step's new keys/values into the rows' pool slots and hands back, per
row, [its shared K/V prefix ; its own keys so far]. The prefix is read from the prompt table's single copy (one
stacked table per set of distinct prefixes in the step, never one per row). Masks are built from positions, so
padding never shifts a row and sliding windows (Gemma 3) count positions, as `inject.attention_masks` does.

Row b's layout, as in `inject.build_layout`: prefix slots hold positions 0..k-1, the row's own tokens (soft
tokens, then the prompt, then generated tokens) hold k, k+1, ...
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from softprompt.model.compat import cache_kw
from softprompt.model.hooks import adapter_host
from softprompt.model.inject import PromptParts, prompt_groups
from softprompt.serving.kv_pool import KVPool


@dataclass
class RowStep:
    """What one row feeds in one forward."""

    inputs: torch.Tensor  # [t,H] input embeddings of the new tokens
    start: int  # own tokens already in the pool
    blocks: list[int]  # the row's block table (holds at least start + t tokens)
    parts: PromptParts | None  # its prompt (K/V prefix and adapter are read from it)


class PoolCache:
    """The cache object a Hugging Face decoder layer calls `update(keys, values, layer_idx)` on."""

    is_compileable = False

    def __init__(self, pool: KVPool, write: torch.Tensor, read: torch.Tensor, prefix: Any, gid: torch.Tensor):
        self.pool, self.write, self.read = pool, write, read  # write [B*T] flat slots; read [B,S]
        self.prefix, self.gid = prefix, gid  # (keys, values) [G,L,kvh,P,hd] or None; gid [B]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        out = []
        for new, store, i in ((key_states, self.pool.keys, 0), (value_states, self.pool.values, 1)):
            B, h, T, d = new.shape
            layer = store[layer_idx]  # [N,kvh,hd] view
            layer[self.write] = new.transpose(1, 2).reshape(B * T, h, d).to(layer.dtype)
            own = layer[self.read].transpose(1, 2)  # [B,S,kvh,hd] -> [B,kvh,S,hd]
            if self.prefix is not None:
                own = torch.cat([self.prefix[i][self.gid, layer_idx], own], dim=2)  # [B,kvh,P+S,hd]
            out.append(own)
        return out[0], out[1]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


class PrefixTable:
    """The distinct K/V prefixes of a step stacked once ([G,L,kvh,P,hd]), reused while the set stays the same."""

    def __init__(self, base: Any):
        self.base = base
        self._key: tuple[int, ...] = ()
        self._table: Any = None

    def get(self, groups: list[PromptParts]) -> tuple[torch.Tensor, torch.Tensor]:
        key = tuple(id(p) for p in groups)
        if key != self._key:
            P = max(p.n_kv for p in groups)
            self._table = tuple(torch.stack([_pad_to(p.kv[i], P).to(self.base.device, self.base.dtype)
                                             for p in groups]) for i in (0, 1))
            self._key = key
        return self._table


def _pad_to(t: torch.Tensor, n: int) -> torch.Tensor:
    """[L,kvh,m,hd] -> [L,kvh,n,hd] (zeros after m)."""
    if t.shape[2] == n:
        return t
    pad = t.new_zeros(*t.shape[:2], n - t.shape[2], t.shape[3])
    return torch.cat([t, pad], dim=2)


def step_masks(base: Any, q_pos: torch.Tensor, q_valid: torch.Tensor, key_pos: torch.Tensor,
               key_valid: torch.Tensor) -> Any:
    """Additive masks [B,1,T,K]: a query sees valid keys at positions <= its own (within the window in sliding
    layers). Padding queries see every valid key of their row, so no softmax row is empty."""
    causal = key_valid[:, None, :] & (key_pos[:, None, :] <= q_pos[:, :, None])  # [B,T,K]
    pad_rows = key_valid[:, None, :].expand_as(causal)

    def additive(a: torch.Tensor) -> torch.Tensor:
        a = torch.where(q_valid[:, :, None], a, pad_rows)
        out = torch.zeros(a.shape, dtype=base.dtype, device=a.device)
        return out.masked_fill(~a, torch.finfo(base.dtype).min)[:, None]

    full = additive(causal)
    if not base.sliding_window:
        return {t: full for t in base.mask_types} if base.mask_types else full
    sliding = additive(causal & (q_pos[:, :, None] - key_pos[:, None, :] < base.sliding_window))
    if base.mask_types is None:
        return sliding
    return {t: (sliding if t == "sliding_attention" else full) for t in base.mask_types}


def _groups(rows: list[RowStep], attr: str) -> tuple[list[PromptParts], list[int]]:
    """Distinct prompts of the step's rows that have `attr`, and each row's index into them (-1: none)."""
    members, gid = prompt_groups([r.parts for r in rows], attr)
    return members, gid.tolist()


@torch.no_grad()
def forward_rows(base: Any, pool: KVPool, rows: list[RowStep], prefixes: PrefixTable) -> torch.Tensor:
    """Run every row's new tokens through the model, writing their K/V to the pool -> hidden [B,T,H]
    (row b's new tokens in columns 0..t_b-1, padding after)."""
    dev = base.device
    B = len(rows)
    x = pad_sequence([r.inputs.to(base.dtype) for r in rows], batch_first=True)  # [B,T,H]
    T = x.shape[1]
    t_b = torch.tensor([r.inputs.shape[0] for r in rows], device=dev)  # [B]
    start = torch.tensor([r.start for r in rows], device=dev)  # [B]
    groups, gid_list = _groups(rows, "kv")
    n_kv = torch.tensor([r.parts.n_kv if r.parts is not None else 0 for r in rows], device=dev)  # [B]
    j = torch.arange(T, device=dev)[None, :]  # [1,T]
    q_valid = j < t_b[:, None]  # [B,T]
    own_q = torch.minimum(start[:, None] + j, (start + t_b - 1)[:, None])  # [B,T] own index; pads repeat the last
    q_pos = n_kv[:, None] + own_q  # [B,T] position (pads never pass the row's own, e.g. GPT-2's position table)
    table = pool.block_table([r.blocks for r in rows])  # [B,nb]
    write = torch.where(q_valid, pool.slots(table, own_q), torch.zeros_like(own_q))  # pads -> scratch block
    S = int((start + t_b).max())
    s = torch.arange(S, device=dev)[None, :]  # [1,S]
    own_valid = s < (start + t_b)[:, None]  # [B,S]
    read = torch.where(own_valid, pool.slots(table, s.expand(B, S)), torch.zeros_like(s))  # [B,S]
    key_pos, key_valid = n_kv[:, None] + s, own_valid
    prefix, gid = None, torch.tensor(gid_list, device=dev).clamp(min=0)
    if groups:
        prefix = prefixes.get(groups)
        P = prefix[0].shape[3]
        p = torch.arange(P, device=dev)[None, :].expand(B, P)
        key_pos = torch.cat([p, key_pos], dim=1)  # [B,P+S]
        key_valid = torch.cat([p < n_kv[:, None], key_valid], dim=1)
    cache = PoolCache(pool, write.reshape(-1), read, prefix, gid)
    mask = step_masks(base, q_pos, q_valid, key_pos, key_valid)
    ad_groups, ad_gid = _groups(rows, "adapter")
    routes = []
    for g, p in enumerate(ad_groups):
        members = torch.tensor([b for b in range(B) if ad_gid[b] == g], device=dev)
        routes.append((None if len(members) == B else members, p.adapter))
    ctx = adapter_host(base).active(routes) if routes else contextlib.nullcontext()
    with ctx:
        out = base.backbone(inputs_embeds=x, attention_mask=mask, position_ids=q_pos, use_cache=True,
                            **cache_kw(base.backbone, cache))
    return out.last_hidden_state


@torch.no_grad()
def check_paged(base: Any, pool: KVPool, prefixes: PrefixTable) -> str | None:
    """None when the paged forward reproduces the model's own forward on this architecture (a 9-token probe fed
    in chunks of 4, 4 and 1), else why not: a family whose attention this path cannot drive is refused loudly."""
    ids = torch.arange(3, 12, device=base.device)[None]  # [1,9]
    blocks = pool.allocate(9) or []
    try:
        want = base.logits(base.backbone(input_ids=ids).last_hidden_state)[0].float()  # [9,V]
        x = base.embed(ids)[0]  # [9,H]
        got = []
        for a, b in ((0, 4), (4, 8), (8, 9)):
            h = forward_rows(base, pool, [RowStep(x[a:b], a, blocks, None)], prefixes)  # [1,b-a,H]
            got.append(base.logits(h[0, :b - a]).float())
    except Exception as e:  # noqa: BLE001 - reported as the reason
        return f"{type(e).__name__}: {e}"
    finally:
        pool.free(blocks)
    err = float((torch.cat(got) - want).abs().max())
    scale = max(1.0, float(want.abs().max()))
    tol = (1e-3 if base.dtype == torch.float32 else 5e-2) * scale
    return None if err <= tol else f"its logits differ from the model's own forward by {err:.3g} (tolerance {tol:.3g})"
