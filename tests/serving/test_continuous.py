"""The continuous engine: rows that join mid-generation get the tokens they get alone (every method, bare rows,
every architecture); seeded sampling is reproducible; cancelled rows free their KV at the next step; a full pool
makes requests wait, never crash; one tenant's flood does not delay another tenant's first token."""

from __future__ import annotations

import threading

import pytest
import torch

import softprompt as sp
from softprompt.errors import InputError
from softprompt.serving.config import ServeConfig
from softprompt.serving.continuous import ContinuousEngine
from softprompt.serving.engine import Job
from softprompt.serving.runner import Runner, Sampling
from softprompt.serving.store import PromptHandle
from tests.families import NAMES as FAMILY_NAMES
from tests.families import family_base
from tests.serving.conftest import METHODS, TASK_EXTRA, make_prompt
from tests.tiny import ARCHS, tiny_base

REFUSED = {"bloom"}  # ALiBi built from a 2D padding mask: the paged path cannot drive it (static serves it)

TEXTS = ["hi", "a longer prompt that needs several prefill chunks.", "mid", "xyz 42", "question: why?", "ok"]


def hybrid_prompt(base: sp.Base, seed: int) -> sp.Prompted:
    p = sp.attach(base, sp.HybridConfig(template="{soft:2}{text}{soft:1}", seed=seed))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prm in p.parameters():
            prm.copy_(torch.randn(prm.shape, generator=g))
    return p


def row_ids(prompt: sp.Prompted | None, tokens: list[int]) -> list[int]:
    """Hybrid prompts' rows carry their soft-slot placeholders around the text, as a rendered template does."""
    if prompt is None or prompt.parts().slots is None:
        return list(tokens)
    k = prompt.parts().slots.shape[0]
    return [-(i + 1) for i in range(k - 1)] + list(tokens) + [-k]


class Harness:
    """A ContinuousEngine over prompts held in memory (no store, no HTTP)."""

    def __init__(self, base: sp.Base, prompts: dict[str, sp.Prompted], soft_prefix_cache: bool = True,
                 extra: dict | None = None, **config):
        self.base, self.prompts = base, prompts
        self.runner = Runner(base, soft_prefix_cache=soft_prefix_cache)
        blobs = {name: p.to_bytes(**(extra or {})) for name, p in prompts.items()}
        self.handles = {name: PromptHandle("t", name, 1, name) for name in prompts}
        cfg = ServeConfig(**{"kv_cache_bytes": 2 << 20, "max_batch_size": 16, "max_step_tokens": 40, **config})
        self.engine = ContinuousEngine(self.runner, lambda h: self.runner.load(*blobs[h.task]), cfg)

    def job(self, name: str | None, text: str, max_tokens: int, tenant: str = "t", **kw) -> Job:
        prompt = None if name is None else self.prompts[name]
        ids = row_ids(prompt, self.base.encode([text])[0])
        handle = None if name is None else PromptHandle(tenant, name, 1, name)
        return Job(handle, ids, max_tokens, tenant=tenant, **kw)

    def alone(self, job: Job, **kw) -> list[int]:
        """What the library generates for this row alone (end-of-sequence dropped, as the engine reports)."""
        prompt = None if job.handle is None else self.prompts[job.handle.task]
        out = sp.generate_ids(self.base, [prompt], [job.ids], max_new_tokens=job.max_new_tokens, **kw)[0]
        eos = self.base.tokenizer.eos_token_id
        return out[:out.index(eos)] if eos in out else out

    def __enter__(self) -> ContinuousEngine:  # noqa: D105
        self.engine.start()
        return self.engine

    def __exit__(self, *exc) -> None:
        self.engine.stop()


def submit_at(engine: ContinuousEngine, step: int, jobs: list[Job], seen: dict) -> None:
    """Submit `jobs` from the worker itself at the end of step `step` (a deterministic mid-generation join)."""
    def hook(e: ContinuousEngine) -> None:
        if e.steps == step:
            seen["running"] = e.running_rows()
            e.submit(jobs)
    engine.step_hook = hook


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("arch,soft_prefix,device", [(a, True, "cpu") for a in ARCHS] + [("llama", False, "cpu")]
                         + [pytest.param("gemma3", True, "cuda", marks=CUDA)])
def test_rows_joining_mid_generation_match_running_alone(arch, soft_prefix, device):
    base = tiny_base(arch)
    base.model.to(device)
    prompts = {m: make_prompt(base, m, seed=30 + i, n=8) for i, m in enumerate(METHODS)}
    prompts["hybrid"] = hybrid_prompt(base, seed=40)
    h = Harness(base, prompts, soft_prefix_cache=soft_prefix)
    first = [h.job("deep_prompt", "running already", 24), h.job(None, "bare and running", 20)]
    names = [*prompts, None]
    joiners = [h.job(names[i % len(names)], TEXTS[i % len(TEXTS)] * (1 + i % 3), 6 + i % 9)
               for i in range(2 * len(names))]
    seen: dict = {}
    with h as engine:
        submit_at(engine, 3, joiners, seen)
        engine.submit(first)
        for job in first + joiners:
            job.future.result(120)
        assert first[0].future.done() and len(first[0].tokens) > 0
    assert seen["running"] == 2  # the joiners came in while the first rows were generating
    assert engine.stats["max_distinct"] >= 5
    for job in first + joiners:
        assert job.future.result().tokens == h.alone(job), (job.handle, job.ids)
    assert engine.pool.used_blocks == 0 and engine.running_rows() == 0


def test_seeded_sampling_is_reproducible_and_equals_sampling_alone(tiny):
    h = Harness(tiny, {"pt": make_prompt(tiny, "prompt_tuning", seed=61, n=4)})
    sampling = Sampling.make(0.9, 0.95)
    solo = h.job("pt", "sample me", 14, sampling=sampling, seed=5)
    with h as engine:
        engine.submit([solo])
        alone_tokens = solo.future.result(60).tokens
        crowd = [h.job(n, t, 10, sampling=sampling, seed=100 + i) for i, (n, t) in enumerate(
            [("pt", "other"), (None, "bare one"), ("pt", "third row"), (None, "x")])]
        again = h.job("pt", "sample me", 14, sampling=sampling, seed=5)
        seen: dict = {}
        submit_at(engine, engine.steps + 2, [again], seen)
        engine.submit(crowd)
        together = again.future.result(60).tokens
    assert seen["running"] >= 3  # it joined a running step
    assert together == alone_tokens
    assert alone_tokens == h.alone(solo, do_sample=True, temperature=0.9, top_p=0.95, seed=[5])


def test_classify_candidates_run_in_steps_and_score_like_one_batch(tiny):
    from softprompt.serving.classify import aggregate, candidates

    p = make_prompt(tiny, "prefix_tuning", seed=62, n=4)
    h = Harness(tiny, {"cls": p}, extra=TASK_EXTRA, max_batch_size=3, max_step_tokens=8)
    cands = [candidates(TASK_EXTRA, "cls", text, tiny.tokenizer) for text in ("a fine film", "dull")]
    jobs = [Job(h.handles["cls"], classify=c, tenant="t") for c in cands]
    with h as engine:
        engine.submit(jobs)
        got = [j.future.result(60) for j in jobs]
    assert engine.stats["max_rows"] <= 3  # never one oversized batch
    entry = h.runner.load(*p.to_bytes())
    for c, r in zip(cands, got):
        want = aggregate(c, h.runner.score([entry.parts] * len(c.words), [c.prefix] * len(c.words), c.words))
        assert r["label"] == want["label"]
        for label in want["scores"]:
            assert r["scores"][label] == pytest.approx(want["scores"][label], abs=1e-4)


def test_cancelled_rows_free_their_kv_at_the_next_step(tiny):
    h = Harness(tiny, {"dp": make_prompt(tiny, "deep_prompt", seed=63, n=4)})
    long = h.job("dp", "a long one", 200)
    other = h.job(None, "keeps going", 30)
    at: dict = {}

    def hook(e: ContinuousEngine) -> None:
        if e.steps == 3:
            at["used"] = e.pool.used_blocks
            long.cancelled = True  # what the API does when the client goes away
        if e.steps == 4:
            at["after"] = (e.pool.used_blocks, e.running_rows())

    with h as engine:
        engine.step_hook = hook
        engine.submit([long, other])
        other.future.result(60)
    assert long.future.cancelled()
    assert len(long.tokens) < 10
    used_by_other = engine.pool.blocks_for(len(other.ids) + 30)
    assert at["used"] > used_by_other
    assert at["after"] == (used_by_other, 1)  # freed within one step; the other row still runs
    assert engine.pool.used_blocks == 0


def test_a_full_kv_pool_makes_requests_wait_and_never_crashes(tiny):
    h = Harness(tiny, {"pt": make_prompt(tiny, "prompt_tuning", seed=64, n=4)}, kv_cache_bytes=12 << 10,
                kv_block_size=4, max_queue=8, max_prompts_per_request=8)
    assert h.engine.pool.bytes_per_token == 256 and h.engine.pool.usable_blocks == 11
    # 12 KiB at 256 bytes per token: 48 tokens, 11 usable blocks of 4; a row (4 soft + 2 + 16 tokens) takes 6
    jobs = [h.job("pt", f"q{i}", 16) for i in range(6)]
    with h as engine:
        engine.submit(jobs)
        with pytest.raises(InputError, match="KV tokens"):
            engine.submit([h.job("pt", "far too long for this pool", 60)])
        results = [j.future.result(60) for j in jobs]
    assert engine.stats["max_rows"] == 1  # one row at a time fits
    for job, r in zip(jobs, results):
        assert r.tokens == h.alone(job)


def test_a_tenants_flood_does_not_delay_another_tenants_first_token(tiny):
    """Scheduler steps from submission to the first token, not wall time: robust on a loaded machine."""
    prompts = {"dp": make_prompt(tiny, "deep_prompt", seed=65, n=4),
               "cls": make_prompt(tiny, "prompt_tuning", seed=66, n=4)}
    h = Harness(tiny, prompts, extra=TASK_EXTRA, max_batch_size=8, max_step_tokens=64, kv_cache_bytes=4 << 20)
    first: dict = {}

    def short(tag: str) -> Job:
        job = h.job(None, "b: short", 2, tenant="b")
        job.on_token = lambda _t: first.setdefault(tag, h.engine.steps + 1)  # called during step steps + 1
        return job

    from softprompt.serving.classify import candidates
    flood = [h.job("dp", f"a flood {i} " * 6, 200, tenant="a") for i in range(12)]
    wide = [Job(PromptHandle("a", "cls", 1, "cls"), classify=candidates(TASK_EXTRA, "cls", f"text {i}" * 8,
                                                                         tiny.tokenizer), tenant="a")
            for i in range(16)]
    with h as engine:
        idle = short("idle")
        start = {"idle": engine.steps}
        engine.submit([idle])
        idle.future.result(60)
        b = short("loaded")
        done = threading.Event()

        def hook(e: ContinuousEngine) -> None:
            if e.steps == start["idle"] + 6:  # the flood holds the batch by now
                start["loaded"] = e.steps
                start["running_a"] = e.running_rows()
                e.submit([b])
            if "loaded" in first:
                done.set()

        engine.step_hook = hook
        engine.submit(flood + wide)
        assert done.wait(60)
        b.future.result(60)
        for j in flood:
            j.cancelled = True
    idle_steps = first["idle"] - start["idle"]
    loaded_steps = first["loaded"] - start["loaded"]
    assert start["running_a"] == int(0.75 * 8)  # tenant a is held to its share of the rows
    assert idle_steps == 1
    assert loaded_steps <= 2 * idle_steps, (idle_steps, loaded_steps)


def test_padding_never_passes_a_rows_position_near_the_models_position_limit():
    """GPT-2's position table has n_positions rows: a short last chunk padded to a neighbour's long chunk must not
    index past it (pads repeat the row's last position)."""
    base = tiny_base("gpt2")  # n_positions 256
    h = Harness(base, {}, max_step_tokens=40)
    near = Job(None, [5 + i % 90 for i in range(250)], 5, tenant="a")  # prefill 0-40, ..., 200-240, then 240-250
    other = Job(None, [7 + i % 80 for i in range(35)], 4, tenant="b")
    seen: dict = {}
    with h as engine:
        submit_at(engine, 6, [other], seen)
        engine.submit([near])
        got = [j.future.result(60).tokens for j in (near, other)]
    assert seen["running"] == 1 and engine.stats["max_rows"] == 2
    assert got == [h.alone(near), h.alone(other)]


def test_a_shared_prefix_is_stored_once_and_rows_hold_only_their_own_tokens(tiny):
    p = make_prompt(tiny, "deep_prompt", seed=67, n=12)
    h = Harness(tiny, {"dp": p}, kv_block_size=4)
    jobs = [h.job("dp", f"row {i}", 8) for i in range(6)]
    at: dict = {}

    def hook(e: ContinuousEngine) -> None:
        if e.steps == 2:
            at.update(used=e.pool.used_blocks, prefix=e.cache.prefix_bytes, rows=e.running_rows())

    with h as engine:
        engine.step_hook = hook
        engine.submit(jobs)
        for j in jobs:
            assert j.future.result(60).tokens == h.alone(j)
    keys, values = h.runner.load(*p.to_bytes()).parts.kv  # [L,kvh,12,hd] each
    assert at["rows"] == 6
    assert at["used"] == sum(engine.pool.blocks_for(len(j.ids) + 8) for j in jobs)  # no prefix token in the pool
    assert at["prefix"] == keys.numel() * keys.element_size() + values.numel() * values.element_size()  # one copy


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_family_is_served_exactly_or_refused_with_the_static_scheduler_named(family):
    base = family_base(family)
    prompts = {"pre": make_prompt(base, "prefix_tuning", seed=68, n=4)}
    try:
        h = Harness(base, prompts)
    except InputError as e:
        assert "--scheduler static" in str(e) and family in REFUSED, (family, str(e))
        return
    assert family not in REFUSED
    first, late = h.job("pre", "already going", 10), h.job(None, "joins late", 6)
    seen: dict = {}
    with h as engine:
        submit_at(engine, 2, [late], seen)
        engine.submit([first])
        got = [j.future.result(60).tokens for j in (first, late)]
    assert seen["running"] == 1
    assert got == [h.alone(first), h.alone(late)]
