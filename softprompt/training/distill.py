"""Context distillation: compress a long context into k soft tokens. Its own recipe, one explicit loop.

    result = compress(base, context, queries, DistillConfig(tokens=10, form="prompt"))
    result.prompted.save("out/prompt")

Teacher = the frozen model reading [context ; query]; student = the same frozen model reading [soft ; query].
The loss over the positions that predict the teacher's own continuation of each query is

    T^2 * mean KL(teacher_T || student_T)  +  ce_weight * CE(reference answer)

(context distillation: Snell, Klein, Zhong 2022 https://arxiv.org/abs/2209.15189 ; gist tokens: Mu, Li, Goodman
2023 https://arxiv.org/abs/2304.08467 ; T^2: Hinton, Vinyals, Dean 2015 https://arxiv.org/abs/1503.02531).

Teacher cache (training/teacher.py). The teacher runs once per query, before training. Its prefill of the context
is computed once and shared by every query as a K/V prefix (the context keeps positions 0..n-1, exactly as in the
concatenation, so this equals running [context ; query]; tests/test_distill.py checks it). It then decodes
`continuation_tokens` tokens (greedy, or sampled with `sample`) and keeps, at each step, the top-k token ids (k =
`top_k`, 64) and their log-probabilities at T=1 and at the training temperature. KL is taken over k+1 bins: the
top-k tokens and one bin for the rest of the vocabulary (teacher tail = 1 - its top-k mass; the student's mass
outside the same k ids). Binning can only lower the KL (data-processing inequality) and is exact when the
teacher's tail is 0.

Queries come from the caller. With none, the model writes them itself ("self-study"): the teacher samples text
that follows the context (T=1, seeded) and each sample, cut at a random length of 8-24 tokens, is a query.

Student init. prompt form: the embeddings of the context's first k tokens. prefix form: the context's own K/V
at k of its positions (`prefix_init`: k 'spread' evenly, the default, or the 'last' k), moved to slots 0..k-1
with RoPE keys rotated by the position change, so 'last' starts as the teacher reading only the last k
positions of its context at their original distances. On the rotten_tomatoes demo 'last' starts closer
(held-out KL 1.49 vs 2.01) but 'spread' ends closer after 40 steps (0.041 vs 0.063).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from softprompt.errors import InputError, TrainingError
from softprompt.methods.prefix_tuning import PrefixTuning, PrefixTuningConfig
from softprompt.methods.prefix_tuning.module import prefill_kv
from softprompt.methods.prompt_tuning import PromptTuning, PromptTuningConfig
from softprompt.model.inject import hidden_mixed
from softprompt.prompted import Prompted
from softprompt.training.config import DistillConfig  # noqa: F401  (re-exported)
from softprompt.training.teacher import (
    TeacherCache,
    binned_kl,
    check_context,
    check_queries,
    context_prompt,
    continuation_logits,
    fidelity,
    normalise_queries,
    self_queries,
    teacher_cache,
)
from softprompt.training.tune import lr_at

log = logging.getLogger(__name__)

# Peak learning rate of both forms. On the rotten_tomatoes demo (smollm2, 40 steps) the prefix form reached
# held-out KL 0.063 at 1e-2 vs 0.167 at 3e-3.
DEFAULT_LR = 1e-2


# ------------------------------------------------------------------------------------------------ student


def _positions(n: int, k: int, how: str) -> torch.Tensor:
    if how == "last":
        return torch.arange(n - k, n)
    return torch.linspace(0, n - 1, k).round().long()


def move_keys(base: Any, keys: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """keys [L,kvh,k,hd] cached at positions p -> as if cached at p + delta [k] (RoPE rotation; other models'
    keys carry no position and are returned as they are)."""
    rot = getattr(base.backbone, "rotary_emb", None)
    if rot is None or not bool(delta.any()):
        return keys
    types = getattr(base.model.config.get_text_config(), "layer_types", None)
    per_type = "layer_type" in inspect.signature(rot.forward).parameters
    out = []
    for layer in range(keys.shape[0]):
        kw = {"layer_type": types[layer]} if per_type else {}
        scale = getattr(rot, f"{kw['layer_type']}_attention_scaling" if per_type else "attention_scaling", 1.0)
        cos, sin = rot(keys[layer], delta[None].to(keys.device), **kw)  # [1,k,hd]
        cos, sin = cos[0].float() / scale, sin[0].float() / scale
        k = keys[layer]
        half = torch.cat([-k[..., k.shape[-1] // 2:], k[..., : k.shape[-1] // 2]], dim=-1)  # rotate_half
        out.append(k * cos + half * sin)
    return torch.stack(out)


@torch.no_grad()
def init_student(base: Any, ctx_ids: list[int], cfg: DistillConfig) -> Prompted:
    """A student of the chosen form, started from the context itself (see the module docstring)."""
    k = cfg.tokens
    if cfg.form == "prompt":
        embeds = base.embed(torch.tensor(ctx_ids[:k], device=base.device)).float()  # [k,H]
        return Prompted(base, PromptTuning(PromptTuningConfig(num_virtual_tokens=k, seed=cfg.seed), embeds))
    keys, values = prefill_kv(base, ctx_ids)  # [L,kvh,n,hd]
    pos = _positions(len(ctx_ids), k, cfg.prefix_init)
    keys = move_keys(base, keys[:, :, pos], torch.arange(k) - pos)
    return Prompted(base, PrefixTuning(PrefixTuningConfig(num_virtual_tokens=k, seed=cfg.seed), keys,
                                       values[:, :, pos]))


def _batch_loss(prompted: Any, cache: TeacherCache, idx: list[int], cfg: DistillConfig) -> tuple[torch.Tensor, float]:
    base, ti = prompted.base, cache.temperatures.index(float(cfg.temperature))
    spans = [len(cache.conts[i]) for i in idx]
    logits = continuation_logits(base, prompted, [cache.queries[i] + cache.conts[i][:-1] for i in idx], spans)
    top = torch.cat([cache.top_ids[i] for i in idx]).to(logits.device)
    t_logp = torch.cat([cache.top_logp[i][ti] for i in idx]).to(logits.device)
    kl = binned_kl(logits, top, t_logp, cfg.temperature).mean()
    loss = cfg.temperature ** 2 * kl
    if cfg.ce_weight:
        loss = loss + cfg.ce_weight * _ce_loss(prompted, cache, idx, logits)
    return loss, float(kl.detach())


def _ce_loss(prompted: Any, cache: TeacherCache, idx: list[int], cont_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the reference answers (else on the teacher's continuation, reusing its logits)."""
    refs = [cache.answers[i] or cache.conts[i] for i in idx]
    if any(cache.answers[i] for i in idx):
        cont_logits = continuation_logits(prompted.base, prompted, [cache.queries[i] + r[:-1] for i, r in
                                                                    zip(idx, refs)], [len(r) for r in refs])
    tgt = torch.tensor([t for r in refs for t in r], device=cont_logits.device)
    return torch.nn.functional.cross_entropy(cont_logits, tgt)


# ------------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def prefill_seconds(base: Any, ctx_ids: list[int], prompted: Any, queries: list[list[int]],
                    repeats: int = 3) -> dict[str, float]:
    """Median seconds of one request's prefill (batch 1, up to the last position's logits) for [context ; query]
    on the plain model, [soft ; query] and [query] alone, interleaved so machine load hits all three alike."""
    runs = {"full": (None, lambda q: ctx_ids + q), "compressed": (prompted, lambda q: q), "none": (None, lambda q: q)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(repeats + 1):  # round 0 warms up
        for q in queries:
            for name, (prompt, ids_of) in runs.items():
                t = time.perf_counter()
                h, _ = hidden_mixed(base, [prompt], torch.tensor([ids_of(q)]))
                base.logits(h[:, -1])
                if r:
                    times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


# ------------------------------------------------------------------------------------------------ the loop


def _batch_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Step `step`'s query indices: epoch e is a permutation seeded by seed + e."""
    per_epoch = math.ceil(n / batch_size)
    epoch, i = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    return perm[i * batch_size:(i + 1) * batch_size]


def distill(prompted: Any, cache: TeacherCache, cfg: DistillConfig, held: TeacherCache | None = None,
            progress: bool = True) -> list[dict[str, Any]]:
    """Train `prompted`'s parameters (only those) to match the teacher on `cache`. Returns the history."""
    from tqdm.auto import tqdm

    params = [p for p in prompted.parameters() if p.requires_grad]
    if not params:
        raise InputError("the student has no trainable parameters")
    if len(cache) == 0:
        raise InputError("no training queries in the teacher cache")
    peak = cfg.lr if cfg.lr is not None else DEFAULT_LR
    opt = torch.optim.AdamW(params, lr=peak, weight_decay=0.0)
    history: list[dict[str, Any]] = []
    bar = tqdm(range(cfg.steps), desc=f"distil {cfg.form}:{cfg.tokens}", disable=not progress, dynamic_ncols=True)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg, peak)
        loss, kl = _batch_loss(prompted, cache, _batch_indices(len(cache), cfg.batch_size, cfg.seed, step), cfg)
        if not torch.isfinite(loss):
            raise TrainingError(f"the loss became non-finite at step {step}; lower the learning rate")
        loss.backward()
        if cfg.clip_norm:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        history.append({"step": step + 1, "loss": float(loss.detach()), "kl": kl, "lr": opt.param_groups[0]["lr"]})
        bar.set_postfix(kl=f"{kl:.4f}", lr=f"{history[-1]['lr']:.2g}")
        if held is not None and cfg.eval_every and (step + 1) % cfg.eval_every == 0:
            ev = fidelity(prompted.base, prompted, held)
            history.append({"step": step + 1, "held_out": ev})
            bar.write(f"step {step + 1}: held-out KL {ev['kl']:.4f}, agreement {ev['agreement']:.3f}")
    bar.close()
    return history


# ------------------------------------------------------------------------------------------------ the job


@dataclass
class Compression:
    prompted: Prompted
    ctx_ids: list[int]
    train: TeacherCache
    held: TeacherCache
    fidelity: dict[str, float]  # compressed prompt on the held-out queries
    before: dict[str, float]  # the initial student
    no_context: dict[str, float]  # the plain model, no context
    history: list[dict[str, Any]]
    seconds: dict[str, float]


def _split(queries: list[dict], cfg: DistillConfig) -> tuple[list[dict], list[dict]]:
    n_held = min(cfg.held_out, len(queries) // 5)
    order = torch.randperm(len(queries), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    held = set(order[:n_held])
    return [q for i, q in enumerate(queries) if i not in held], [q for i, q in enumerate(queries) if i in held]


def compress(base: Any, context: str, queries: Sequence[Any] | None, cfg: DistillConfig = DistillConfig(), *,
             held_out: Sequence[Any] | None = None, store_context: bool = False,
             progress: bool = True) -> Compression:
    """Distil `context` into `cfg.tokens` soft tokens. `queries`: str or {"query"/"text", "answer"?} items
    (None: the model writes `cfg.auto_queries` itself); `held_out`: queries that only measure fidelity (default:
    up to `cfg.held_out` taken out of `queries`, at most a fifth). The manifest extra records the ratio, the
    fidelity, the context's token count and sha256 (the text itself only with `store_context`)."""
    t0 = time.time()
    if not isinstance(context, str):
        raise InputError(f"the context must be a str, got {type(context).__name__}")
    ctx_ids = base.tokenizer(context)["input_ids"]
    check_context(base, context, ctx_ids, cfg)
    if queries is None:
        qs = self_queries(base, ctx_ids, cfg.auto_queries, cfg, progress)
        if not qs:
            raise InputError("the model wrote no usable queries from the context (every sample ended at once); "
                             "pass queries")
    else:
        qs = normalise_queries(queries, base.tokenizer)
    check_queries(base, len(ctx_ids), qs, cfg)
    if held_out is None:
        qs, held = _split(qs, cfg)
    else:
        held = normalise_queries(held_out, base.tokenizer)
        check_queries(base, len(ctx_ids), held, cfg, "held-out queries")
    on = "held-out" if held else "training queries"
    t1 = time.time()
    teacher = context_prompt(base, ctx_ids)
    train = teacher_cache(base, teacher, qs, cfg, progress, "teacher (train)")
    held_cache = teacher_cache(base, teacher, held, cfg, progress, "teacher (held-out)") if held else train
    t2 = time.time()
    student = init_student(base, ctx_ids, cfg)
    before, none = fidelity(base, student, held_cache), fidelity(base, None, held_cache)
    history = distill(student, train, cfg, held_cache, progress)
    after = fidelity(base, student, held_cache)
    secs = {"queries": t1 - t0, "teacher": t2 - t1, "train": time.time() - t2}
    student.extra["compression"] = {
        "context_tokens": len(ctx_ids), "tokens": cfg.tokens, "ratio": len(ctx_ids) / cfg.tokens,
        "context_sha256": hashlib.sha256(context.encode("utf-8")).hexdigest(), "form": cfg.form,
        "fidelity": {**after, "on": on}, "before_training": before, "no_context": none,
        "queries": {"train": len(train), "held_out": len(held), "self_generated": queries is None},
        "distill": cfg.to_dict(), "seconds": secs,
        **({"context": context} if store_context else {}),
    }
    return Compression(student, ctx_ids, train, held_cache, after, before, none, history, secs)


def report(base: Any, comp: Compression, metric: Any = None, timing_queries: int = 8,
           repeats: int = 3) -> list[dict[str, Any]]:
    """One row each for the full context, the compressed prompt and no context: tokens, ratio, held-out KL and
    agreement, the task metric (metric(base, prompt) -> float), and median prefill ms per request."""
    n, k = len(comp.ctx_ids), comp.prompted.config.num_virtual_tokens
    times = prefill_seconds(base, comp.ctx_ids, comp.prompted, comp.held.queries[:timing_queries], repeats)
    full = context_prompt(base, comp.ctx_ids)
    same = fidelity(base, full, comp.held)  # the teacher against its own cache: ~0 KL, checks the plumbing
    rows = [
        {"prompt": "full context", "tokens": n, "ratio": 1.0, "kl": same["kl"], "agreement": same["agreement"],
         "prompt_obj": full},
        {"prompt": f"compressed ({comp.prompted.method})", "tokens": k, "ratio": n / k, "kl": comp.fidelity["kl"],
         "agreement": comp.fidelity["agreement"], "prompt_obj": comp.prompted},
        {"prompt": "no context", "tokens": 0, "ratio": None, "kl": comp.no_context["kl"],
         "agreement": comp.no_context["agreement"], "prompt_obj": None},
    ]
    q_len = statistics.mean(len(q) for q in comp.held.queries[:timing_queries])
    for row, key in zip(rows, ("full", "compressed", "none")):
        obj = row.pop("prompt_obj")
        row["metric"] = metric(base, obj) if metric is not None else None
        row["prefill_ms"] = 1000 * times[key]
        row["request_tokens"] = row["tokens"] + q_len  # mean over the timed requests
    return rows
