"""The teacher side of context distillation (see training/distill.py for the recipe): the inputs' checks, the
teacher's one pass per query (its continuation and top-k log-probabilities, kept in a TeacherCache), the
self-written queries, and fidelity, the measure of how close a prompt comes to the teacher on a cache."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from softprompt.errors import InputError
from softprompt.methods.prefix_tuning.module import prefill_kv
from softprompt.model.compat import cache_kw, cache_of
from softprompt.model.generate import generate_ids
from softprompt.model.inject import PromptParts, build_layout, hidden_mixed, pad_batch, run_backbone

if TYPE_CHECKING:
    from softprompt.training.distill import DistillConfig


@dataclass
class TeacherCache:
    """What the teacher said, once per query: its continuation and top-k log-probs at each continuation step."""

    queries: list[list[int]]
    conts: list[list[int]]  # the teacher's continuation of each query (1..continuation_tokens ids)
    top_ids: list[torch.Tensor]  # [m_i, K] ids, most likely first
    top_logp: list[torch.Tensor]  # [len(temperatures), m_i, K] log-probabilities
    temperatures: tuple[float, ...]
    answers: list[list[int] | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.queries)


# ------------------------------------------------------------------------------------------------ inputs


def max_positions(base: Any, cfg: DistillConfig) -> int:
    """cfg.max_tokens, else the model's max positions, or its sliding window if it has sliding-window layers
    (their cache keeps only the window, so a longer context cannot be held as a K/V prefix)."""
    c = base.model.config.get_text_config()
    limit = getattr(c, "max_position_embeddings", None) or getattr(c, "n_positions", None) or 1 << 30
    if getattr(c, "sliding_window", None) and "sliding_attention" in (getattr(c, "layer_types", None) or []):
        limit = min(limit, c.sliding_window - 1)
    return min(cfg.max_tokens, limit) if cfg.max_tokens else limit


def check_context(base: Any, context: str, ctx_ids: list[int], cfg: DistillConfig) -> None:
    limit, n, problems = max_positions(base, cfg), len(ctx_ids), []
    if not context.strip():
        raise InputError("the context is empty: pass a non-empty context (--context FILE or --context-text)")
    if n > limit:
        problems.append(f"the context has {n} tokens, more than the limit of {limit}: shorten it"
                        + ("" if cfg.max_tokens else " (the model's max positions or sliding window)")
                        + " or raise max_tokens")
    if cfg.tokens >= n:
        problems.append(f"tokens={cfg.tokens} is not smaller than the context's {n} tokens: nothing to compress; "
                        f"use fewer tokens")
    if problems:
        raise InputError("; ".join(problems))


def normalise_queries(items: Sequence[Any], tokenizer: Any) -> list[dict]:
    """str or {"query"|"text": str, "answer": str?} -> [{"ids": [...], "answer": [...] | None}]."""
    out, bad = [], []
    for i, it in enumerate(items):
        q = it if isinstance(it, str) else (it.get("query") or it.get("text")) if isinstance(it, dict) else None
        if not isinstance(q, str) or not q.strip():
            bad.append(i)
            continue
        ans = it.get("answer") if isinstance(it, dict) else None
        out.append({"ids": tokenizer(q, add_special_tokens=False)["input_ids"],
                    "answer": tokenizer(str(ans), add_special_tokens=False)["input_ids"] if ans else None})
    if bad:
        raise InputError(f"{len(bad)} queries are empty or lack a 'query'/'text' string (first at index {bad[0]})")
    return out


def check_queries(base: Any, n_ctx: int, queries: list[dict], cfg: DistillConfig, what: str = "queries") -> None:
    if not queries:
        raise InputError(f"no {what}: pass a queries file (one per line, or JSONL with 'query'/'text') or omit it "
                         "to let the model write queries from the context")
    limit = max_positions(base, cfg)
    over = [i for i, q in enumerate(queries) if n_ctx + len(q["ids"]) + cfg.continuation_tokens > limit]
    if over:
        raise InputError(f"{len(over)} {what} do not fit: context ({n_ctx}) + query + continuation "
                         f"({cfg.continuation_tokens}) tokens exceed the limit of {limit} (first: index {over[0]}); "
                         "shorten them, the context or continuation_tokens")


# ------------------------------------------------------------------------------------------------ teacher


def context_prompt(base: Any, ctx_ids: list[int]) -> PromptParts:
    """The full context as a K/V prefix: equals prepending its tokens (same positions 0..n-1)."""
    return PromptParts(kv=prefill_kv(base, ctx_ids))


def _top(logits: torch.Tensor, k: int, temps: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [B,V] -> top-k ids [B,K], their log-probs [B,nT,K] at each temperature."""
    ids = logits.topk(k, dim=-1).indices
    lp = torch.stack([torch.log_softmax(logits / t, -1).gather(1, ids) for t in temps], dim=1)
    return ids, lp


@torch.no_grad()
def teacher_rollout(base: Any, teacher: PromptParts, queries: list[list[int]], cfg: DistillConfig,
                    temps: tuple[float, ...], gen: torch.Generator | None = None) -> list[tuple]:
    """One teacher pass over a batch of queries: prefill, then decode, recording top-k at every step.
    -> per query (continuation ids, top ids [m,K], top log-probs [nT,m,K])."""
    B, K = len(queries), min(cfg.top_k, base.facts.vocab_size)
    eos = base.tokenizer.eos_token_id
    ids, mask = pad_batch(queries)
    layout = build_layout(base, [teacher] * B, ids, mask)
    res = run_backbone(base, layout, use_cache=True)
    logits = base.logits(res.last_hidden_state[:, -1]).float()  # [B,V]
    attn, pos, cache = layout.attention_mask, layout.position_ids[:, -1], cache_of(res)
    conts, tids, tlps, done = [[] for _ in range(B)], [[] for _ in range(B)], [[] for _ in range(B)], [False] * B
    for step in range(cfg.continuation_tokens):
        top_ids, top_lp = _top(logits, K, temps)
        if cfg.sample:
            nxt = torch.multinomial(torch.softmax(logits, -1).cpu(), 1, generator=gen).squeeze(-1).to(logits.device)
        else:
            nxt = logits.argmax(-1)
        for b in range(B):
            if not done[b]:
                conts[b].append(int(nxt[b]))
                tids[b].append(top_ids[b])
                tlps[b].append(top_lp[b])
                done[b] = int(nxt[b]) == eos
        if all(done) or step == cfg.continuation_tokens - 1:
            break
        pos, attn = pos + 1, torch.cat([attn, attn.new_ones(B, 1)], dim=1)
        res = base.backbone(inputs_embeds=base.embed(nxt[:, None]), attention_mask=attn, position_ids=pos[:, None],
                            use_cache=True, **cache_kw(base.backbone, cache))
        cache, logits = cache_of(res), base.logits(res.last_hidden_state[:, -1]).float()
    return [(conts[b], torch.stack(tids[b]).cpu(), torch.stack(tlps[b], dim=1).cpu()) for b in range(B)]


def teacher_cache(base: Any, teacher: PromptParts, queries: list[dict], cfg: DistillConfig,
                  progress: bool = False, desc: str = "teacher") -> TeacherCache:
    """Run the teacher once per query and keep what the student is trained on."""
    from tqdm.auto import tqdm

    temps = tuple(dict.fromkeys((1.0, float(cfg.temperature))))
    gen = torch.Generator().manual_seed(cfg.seed)
    cache = TeacherCache([], [], [], [], temps, [])
    bs = 2 * cfg.batch_size
    for s in tqdm(range(0, len(queries), bs), desc=desc, disable=not progress, leave=False):
        chunk = queries[s:s + bs]
        said = teacher_rollout(base, teacher, [q["ids"] for q in chunk], cfg, temps, gen)
        for q, (cont, ids, lp) in zip(chunk, said):
            cache.queries.append(q["ids"])
            cache.conts.append(cont)
            cache.top_ids.append(ids)
            cache.top_logp.append(lp)
            cache.answers.append(q.get("answer"))
    return cache


@torch.no_grad()
def self_queries(base: Any, ctx_ids: list[int], n: int, cfg: DistillConfig, progress: bool = False) -> list[dict]:
    """n queries the model writes itself: teacher samples after the context (T=1, seeded), cut at 8-24 tokens."""
    from tqdm.auto import tqdm

    prefix = PromptParts(kv=prefill_kv(base, ctx_ids[:-1]))  # the row's one token is the context's last token
    g = torch.Generator().manual_seed(cfg.seed)
    cuts = torch.randint(8, 25, (n,), generator=g).tolist()
    eos, out = base.tokenizer.eos_token_id, []
    for s in tqdm(range(0, n, cfg.batch_size * 2), desc="self-generated queries", disable=not progress, leave=False):
        b = min(cfg.batch_size * 2, n - s)
        samples = generate_ids(base, [prefix] * b, [ctx_ids[-1:]] * b, max_new_tokens=24, do_sample=True,
                               seed=cfg.seed + s)
        for i, ids in enumerate(samples):
            ids = ids[: ids.index(eos)] if eos in ids else ids
            if ids[: cuts[s + i]]:
                out.append({"ids": ids[: cuts[s + i]], "answer": None})
    return out


# ------------------------------------------------------------------------------------------------ fidelity


def continuation_logits(base: Any, prompt: Any, rows: list[list[int]], spans: list[int]) -> torch.Tensor:
    """Logits [sum(spans),V] at the last spans[b] positions of each row (rows = query + continuation[:-1])."""
    ids, mask = pad_batch(rows, base.tokenizer.pad_token_id or 0)
    h, _ = hidden_mixed(base, [prompt] * len(rows), ids, mask)  # content ends at column T-1 in every row
    T = h.shape[1]
    pos = torch.cat([torch.arange(T - n, T) for n in spans]).to(h.device)
    row = torch.cat([torch.full((n,), b) for b, n in enumerate(spans)]).to(h.device)
    return base.logits(h[row, pos]).float()


def binned_kl(logits: torch.Tensor, top_ids: torch.Tensor, t_logp: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) [N] over the teacher's top-k tokens [N,K] plus one tail bin."""
    s = torch.log_softmax(logits / temperature, -1).gather(1, top_ids)  # [N,K]
    t_tail = (1 - t_logp.exp().sum(-1)).clamp(min=0)  # [N]
    x = s.logsumexp(-1).clamp(max=-1e-7)  # log of the student's top-k mass
    s_tail = torch.where(x > -0.693, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))  # log(1 - e^x)
    return (t_logp.exp() * (t_logp - s)).sum(-1) + torch.xlogy(t_tail, t_tail) - t_tail * s_tail


@torch.no_grad()
def fidelity(base: Any, prompt: Any, cache: TeacherCache, batch_size: int = 16) -> dict[str, float]:
    """How close `prompt` (None: no context) is to the teacher on `cache`, teacher-forced on its continuations:
    mean KL at T=1 per continuation position, greedy next-token agreement over all positions and the first."""
    kls, agree, first = [], [], []
    for s in range(0, len(cache), batch_size):
        idx = list(range(s, min(s + batch_size, len(cache))))
        spans = [len(cache.conts[i]) for i in idx]
        logits = continuation_logits(base, prompt, [cache.queries[i] + cache.conts[i][:-1] for i in idx], spans)
        top = torch.cat([cache.top_ids[i] for i in idx]).to(logits.device)
        t_logp = torch.cat([cache.top_logp[i][0] for i in idx]).to(logits.device)
        kls.append(binned_kl(logits, top, t_logp, 1.0).clamp(min=0))  # >= 0 up to float error
        hit = logits.argmax(-1) == top[:, 0]
        agree.append(hit)
        first.append(hit[torch.tensor([0] + spans[:-1]).cumsum(0).to(hit.device)])
    kl, agree, first = torch.cat(kls), torch.cat(agree).float(), torch.cat(first).float()
    return {"kl": float(kl.mean()), "agreement": float(agree.mean()), "first_token_agreement": float(first.mean()),
            "queries": len(cache), "positions": len(kl)}
