"""Padding and mixed batches: every row gets exactly what it gets alone, whatever its neighbours carry.

The "alone" side of each comparison is one unpadded row through the same library call; test_exactness.py
ties that to the plain model.
"""

from __future__ import annotations

import pytest
import torch

import softprompt as sp
from softprompt.model.inject import build_layout
from tests.test_exactness import (
    CONFIGS,
    METHODS,
    assert_close,
    make_prompt,
    row_ids,
    shared_base,
    shared_prompt,
)

LENGTHS = (6, 1, 4)

KV_METHODS = ("prefix_tuning", "prefix_tuning_reparam", "deep_prompt")


def tokens(length: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 99, (length,), generator=g).tolist()


@torch.no_grad()
def alone(base: sp.Base, prompt, ids: list[int]) -> torch.Tensor:
    """Logits [L,V] of one unpadded row."""
    return sp.forward_mixed(base, [prompt], torch.tensor([ids]))[0]


@torch.no_grad()
def check_rows_match_alone(base: sp.Base, prompts: list, rows: list[list[int]], side: str,
                           refs: list[torch.Tensor] | None = None) -> None:
    """One padded forward over all rows; each row's real positions equal `refs` (default: the row alone)."""
    refs = refs or [alone(base, p, row) for p, row in zip(prompts, rows)]
    ids, mask = sp.pad_batch(rows, side=side)
    out = sp.forward_mixed(base, prompts, ids, mask)
    assert out.shape == (len(rows), ids.shape[1], base.facts.vocab_size)
    for b, ref in enumerate(refs):
        real = mask[b].bool()
        assert_close(out[b, real], ref)
        assert torch.equal(out[b, ~real], torch.zeros_like(out[b, ~real])), "pad positions must hold zeros"


@pytest.mark.parametrize("name", METHODS)
def test_left_and_right_padding_give_each_row_its_unpadded_logits(arch, name):
    base = shared_base(arch)
    p = shared_prompt(arch, name)
    rows = [row_ids(p, tokens(n, seed=i)) for i, n in enumerate(LENGTHS)]
    refs = [alone(base, p, row) for row in rows]
    for side in ("left", "right"):
        check_rows_match_alone(base, [p] * len(rows), rows, side, refs)


@pytest.mark.parametrize("name", METHODS)
def test_left_padding_amount_never_changes_a_row(arch, name):
    """Soft tokens sit next to the content, so neither the caller's padding nor the padding a long
    neighbour forces on a short row may change it. 80 tokens exceed Gemma-3's sliding window (64)."""
    base = shared_base(arch)
    p = shared_prompt(arch, name)
    row = row_ids(p, tokens(5, seed=1))
    ref = alone(base, p, row)
    with torch.no_grad():
        for pads in (3, 90):
            ids = torch.tensor([[0] * pads + row])
            mask = torch.tensor([[0] * pads + [1] * len(row)])
            assert_close(sp.forward_mixed(base, [p], ids, mask)[0, pads:], ref)
        for neighbour in (None, p):
            long_row = row_ids(neighbour, tokens(80, seed=2))
            ids, mask = sp.pad_batch([long_row, row], side="left")
            out = sp.forward_mixed(base, [neighbour, p], ids, mask)
            assert_close(out[1, -len(row):], ref)


def mixed_prompts(arch: str) -> list:
    """One row per method and variant, two more prompts of other sizes, and rows with no prompt."""
    base = shared_base(arch)
    extra = [make_prompt(base, "prompt_tuning", seed=7), None,
             sp.attach(base, sp.PrefixTuningConfig(num_virtual_tokens=5, init="random", seed=3))]
    return [shared_prompt(arch, n) for n in METHODS] + extra + [None]


@pytest.mark.parametrize("side", ["left", "right"])
def test_mixed_batch_gives_each_row_its_own_logits(arch, side):
    base = shared_base(arch)
    prompts = mixed_prompts(arch)
    rows = [row_ids(p, tokens(1 + (3 * i) % 8, seed=10 + i)) for i, p in enumerate(prompts)]
    refs = [alone(base, p, row) for p, row in zip(prompts, rows)]
    check_rows_match_alone(base, prompts, rows, side, refs)
    # the same prompts in another order: still each row's own logits
    check_rows_match_alone(base, prompts[::-1], rows[::-1], side, refs[::-1])


@pytest.mark.parametrize("use_cache", [True, False])
def test_mixed_generation_gives_each_row_its_own_tokens(arch, use_cache):
    base = shared_base(arch)
    prompts = mixed_prompts(arch)
    rows = [row_ids(p, tokens(1 + (3 * i) % 8, seed=20 + i)) for i, p in enumerate(prompts)]
    together = sp.generate_ids(base, prompts, rows, max_new_tokens=4, use_cache=use_cache, eos_token_id=[])
    for p, row, got in zip(prompts, rows, together):
        assert [got] == sp.generate_ids(base, [p], [row], max_new_tokens=4, use_cache=use_cache, eos_token_id=[])
        assert len(got) == 4


@pytest.mark.parametrize("name", METHODS)
def test_cached_generation_equals_uncached(arch, name):
    base = shared_base(arch)
    p = shared_prompt(arch, name)
    rows = [row_ids(p, tokens(n, seed=30 + n)) for n in (2, 6)]
    cached = sp.generate_ids(base, [p, p], rows, max_new_tokens=4, use_cache=True, eos_token_id=[])
    assert cached == sp.generate_ids(base, [p, p], rows, max_new_tokens=4, use_cache=False, eos_token_id=[])
    assert [len(t) for t in cached] == [4, 4]


@pytest.mark.parametrize("name", METHODS)
def test_cached_sampling_equals_uncached(name):
    base = shared_base("llama")
    p = shared_prompt("llama", name)
    rows = [row_ids(p, tokens(n, seed=60 + n)) for n in (3, 5)]
    kw = dict(max_new_tokens=4, do_sample=True, top_p=0.9, seed=5, eos_token_id=[])
    cached = sp.generate_ids(base, [p, p], rows, use_cache=True, **kw)
    assert cached == sp.generate_ids(base, [p, p], rows, use_cache=False, **kw)
    assert cached == sp.generate_ids(base, [p, p], rows, use_cache=True, **kw), "a seed makes sampling repeatable"


def test_packed_layout_puts_soft_tokens_right_before_the_content(arch):
    """Each row reads [pads | soft | content]; K/V prefix slots come first in the key axis."""
    base = shared_base(arch)
    pt, prefix, pt2 = (shared_prompt(arch, n) for n in ("prompt_tuning", "prefix_tuning", "p_tuning_lstm"))
    prompts = [pt, prefix, None, pt2]
    parts = [None if p is None else p.parts() for p in prompts]
    rows = [tokens(n, seed=40 + n) for n in (2, 5, 3, 4)]
    ids, mask = sp.pad_batch(rows, side="right")
    with torch.no_grad():
        lay = build_layout(base, parts, ids, mask)
        T = lay.inputs_embeds.shape[1]
        P = lay.attention_mask.shape[1] - T  # K/V prefix slots
        assert P == prefix.config.num_virtual_tokens
        for b, (part, row) in enumerate(zip(parts, rows)):
            n_e = 0 if part is None else part.n_embed
            n_kv = 0 if part is None else part.n_kv
            content, start = T - len(row), T - len(row) - n_e
            emb = base.embed(torch.tensor(row))
            assert torch.equal(lay.inputs_embeds[b, content:], emb)
            if n_e:
                assert torch.equal(lay.inputs_embeds[b, start:content], part.embeds.to(emb.dtype))
            want = [1] * n_kv + [0] * (P - n_kv) + [0] * start + [1] * (T - start)
            assert lay.attention_mask[b].tolist() == want
            assert lay.position_ids[b, start:].tolist() == list(range(n_kv, n_kv + n_e + len(row)))


@pytest.mark.parametrize("with_embeds", [False, True])
def test_slot_placeholders_equal_manual_embedding_substitution(arch, with_embeds):
    base = shared_base(arch)
    H = base.facts.hidden_size
    g = torch.Generator().manual_seed(0)
    slots = torch.randn(3, H, generator=g)
    prefix = torch.randn(2, H, generator=g) if with_embeds else None
    hybrid = sp.PromptParts(embeds=prefix, slots=slots)
    rows = [[-1, 5, 6, -3, 7], [8, 9, 10, 11, 12, 13], [-2, -2, 14]]
    prompts = [hybrid, None, hybrid]
    for side in ("left", "right"):
        ids, mask = sp.pad_batch(rows, side=side)
        with torch.no_grad():
            out = sp.forward_mixed(base, prompts, ids, mask)
            for b, (p, row) in enumerate(zip(prompts, rows)):
                e = base.model.get_input_embeddings()(torch.tensor([row]).clamp(min=0))[0]  # [L,H]
                for col, tok in enumerate(row):
                    if tok < 0:
                        e[col] = slots[-tok - 1]
                if p is not None and prefix is not None:
                    e = torch.cat([prefix, e])
                n = e.shape[0] - len(row)
                ref = base.model(inputs_embeds=e[None]).logits[0, n:]
                assert_close(out[b, mask[b].bool()], ref)


def test_placeholders_in_a_row_without_slots_are_refused(arch):
    with pytest.raises(sp.InputError, match="placeholder"):
        sp.forward_mixed(shared_base(arch), [None], torch.tensor([[-1, 5, 6]]))


def test_a_placeholder_beyond_the_slots_is_refused(arch):
    base = shared_base(arch)
    two_slots = sp.PromptParts(slots=torch.randn(2, base.facts.hidden_size))
    with pytest.raises(sp.InputError):  # -3 names slot 2, but the prompt has slots 0 and 1 only
        sp.forward_mixed(base, [two_slots], torch.tensor([[-3, 5, 6]]))


def test_bad_inputs_raise_input_error(llama_base):
    base = llama_base
    p = sp.attach(base, CONFIGS["prompt_tuning"])
    ids, mask = sp.pad_batch([[5, 6, 7], [8]])
    with pytest.raises(sp.InputError, match="no tokens"):
        sp.forward_mixed(base, [p, p], ids, torch.tensor([[1, 1, 1], [0, 0, 0]]))
    with pytest.raises(sp.InputError, match="prompts for 2 rows"):
        sp.forward_mixed(base, [p], ids, mask)
    with pytest.raises(sp.InputError, match="prompts for 2 rows"):
        sp.forward_mixed(base, [p, None, p], ids, mask)
    with pytest.raises(sp.InputError, match="no tokens"):
        sp.generate_ids(base, [p, p], [[5, 6], []], max_new_tokens=2)
    with pytest.raises(sp.InputError):
        sp.generate_ids(base, [p], [[5, 6], [7]], max_new_tokens=2)
    with pytest.raises(sp.InputError):
        p(torch.tensor([5, 6, 7]))  # not [batch, length]


@pytest.mark.parametrize("name", METHODS)
def test_heavily_padded_batch_trains_with_finite_logits_and_gradients(arch, name):
    """A packed batch of very unequal rows (mostly padding, rows with no prompt among them): logits are
    finite everywhere, and a loss over the real positions gives finite, non-zero gradients.
    (Both padding sides pack to the same layout; the padding-side test above covers the repacking.)"""
    base = shared_base(arch)
    p = make_prompt(base, name)
    prompts = [p, p, None, p, None]
    rows = [row_ids(q, tokens(n, seed=50 + n)) for q, n in zip(prompts, (24, 1, 1, 2, 3))]
    ids, mask = sp.pad_batch(rows, side="right")
    logits = sp.forward_mixed(base, prompts, ids, mask)
    assert torch.isfinite(logits).all()
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids.clamp(min=0), reduction="none")  # [B,L]
    loss = (nll * mask).sum() / mask.sum()
    loss.backward()
    grads = [q.grad for q in p.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), "non-finite gradient"
    assert all(g.abs().sum() > 0 for g in grads), "a parameter got no gradient"


def test_a_seeded_sampled_row_does_not_depend_on_its_batch_mates():
    base = shared_base("llama")
    p, q = shared_prompt("llama", "prompt_tuning"), shared_prompt("llama", "deep_prompt")
    mine = row_ids(p, tokens(4, seed=70))
    kw = dict(max_new_tokens=6, do_sample=True, temperature=1.5, eos_token_id=[])
    alone = sp.generate_ids(base, [p], [mine], seed=[11], **kw)
    others = [row_ids(q, tokens(7, seed=71)), row_ids(None, tokens(2, seed=72))]
    batched = sp.generate_ids(base, [q, p, None], [others[0], mine, others[1]], seed=[3, 11, None], **kw)
    assert batched[1] == alone[0]
    assert sp.generate_ids(base, [p], [mine], seed=11, **kw) == alone  # one row: an int seed is that row's seed
    with pytest.raises(sp.InputError, match="2 seeds for 1 rows"):
        sp.generate_ids(base, [p], [mine], seed=[1, 2], **kw)


@pytest.mark.parametrize("temperature", [1e-40, 1e-300, 5e-324])
def test_a_tiny_sampling_temperature_is_greedy_not_nan(temperature):
    """logits / 1e-40 overflows to inf (softmax of inf - inf is NaN and multinomial fails); the library's sampler
    shifts the logits first, so a tiny temperature samples the argmax, as its limit says."""
    base = shared_base("llama")
    pt = sp.attach(base, sp.PromptTuningConfig(num_virtual_tokens=3, seed=1))
    texts = ["ab", "a longer row"]
    greedy = sp.generate_mixed(base, [pt, None], texts, max_new_tokens=4)
    assert sp.generate_mixed(base, [pt, None], texts, max_new_tokens=4, do_sample=True,
                             temperature=temperature, seed=[1, 2]) == greedy
