"""The family matrix: every method exact on tiny random models of 22 Hugging Face causal-LM families.

Each check is against a plain computation on the unmodified model (the references of test_exactness.py):
prompt tuning and P-tuning against `model(inputs_embeds=[P ; E(x)])`, prefix tuning against the model fed the
K/V as its cache, deep prompt tuning against the literal concatenate-and-drop, adapters against hooks added by
hand; mixed rows and both padding sides against each row alone; greedy generation, with and without the cache,
against a no-cache loop on the plain model; PEFT export and import where PEFT supports the family.
"""

from __future__ import annotations

import warnings
from functools import cache

import pytest
import torch

import softprompt as sp
from softprompt.model.head import Head
from tests.families import NAMES, family_base, family_model
from tests.test_exactness import (
    METHODS,
    assert_changes,
    assert_close,
    make_prompt,
    rand_ids,
    ref_adapter,
    ref_deep_naive,
    ref_inputs_embeds,
    ref_past_kv,
    row_ids,
)
from tests.test_mixed import alone, check_rows_match_alone, tokens
from tests.tiny import tiny_tokenizer


@pytest.fixture(params=NAMES)
def family(request) -> str:
    """Every test taking `family` runs once per family, named in its test id."""
    return request.param


@cache
def fbase(family: str) -> sp.Base:
    """One frozen tiny base per family, shared by the read-only tests of this module."""
    return family_base(family)


@cache
def fprompt(family: str, name: str, seed: int = 0) -> sp.Prompted:
    return make_prompt(fbase(family), name, seed)


def test_head_equals_the_models_own_logits(family):
    """`Base.logits` (full and the verbalizer-only subset) equals the model's forward; the head is read off the
    model (Cohere's logit_scale, Granite's logits_scaling, Gemma's soft-capping), not assumed."""
    base = fbase(family)
    ids = rand_ids(2, 7)
    sub = torch.tensor([4, 17, 60, 98])
    with torch.no_grad():
        want = base.model(input_ids=ids).logits
        h = base.backbone(input_ids=ids).last_hidden_state
        assert_close(base.logits(h), want)
        assert_close(base.logits(h[:, -1], sub), want[:, -1, sub])
        bare = Head(base.model.get_output_embeddings())(h)  # the projection alone, as the old head computed it
    if base.head.multiply or base.head.divide or base.head.softcap:
        assert (bare - want).abs().max() > 1e-2, "the family's post-processing must be visible in the check"


def test_prompt_tuning_equals_plain_model_on_spliced_embeddings(family):
    base, p = fbase(family), fprompt(family, "prompt_tuning")
    ids = rand_ids(2, 6)
    with torch.no_grad():
        out = p(ids)
    assert_close(out, ref_inputs_embeds(base, p.prompt.embeds.detach(), ids))
    assert_changes(out, base, ids)


def test_p_tuning_equals_plain_model_on_its_produced_embeddings(family):
    base, p = fbase(family), fprompt(family, "p_tuning_mlp")
    ids = rand_ids(2, 6)
    with torch.no_grad():
        out, produced = p(ids), p.prompt.embeds()
    assert_close(out, ref_inputs_embeds(base, produced, ids))
    assert_changes(out, base, ids)


def test_prefix_tuning_equals_plain_model_fed_the_kv(family):
    base, p = fbase(family), fprompt(family, "prefix_tuning")
    ids = rand_ids(2, 6)
    with torch.no_grad():
        out = p(ids)
        keys, values = p.prompt.kv()
    assert_close(out, ref_past_kv(base, keys, values, ids))
    assert_changes(out, base, ids)


def test_deep_prompt_equals_naive_concatenate_and_drop(family):
    base, p = fbase(family), fprompt(family, "deep_prompt")
    ids = rand_ids(2, 6)
    with torch.no_grad():
        out = p(ids)
    assert_close(out, ref_deep_naive(base, p.prompt.states.detach(), ids))
    assert_changes(out, base, ids)


def test_hybrid_slots_equal_plain_model_on_substituted_embeddings(family):
    base, p = fbase(family), fprompt(family, "hybrid")
    slots = p.parts().slots.detach()  # [K,H]
    ids = torch.tensor([row_ids(p, rand_ids(1, 6)[0].tolist())])
    with torch.no_grad():
        out = p(ids)
        e = base.model.get_input_embeddings()(ids.clamp(min=0))[0]  # [T,H]
        e[ids[0] < 0] = slots[-ids[0][ids[0] < 0] - 1]
        assert_close(out, base.model(inputs_embeds=e[None]).logits)


def test_adapter_equals_bottleneck_added_by_hand(family):
    base, p = fbase(family), fprompt(family, "adapter")
    ids = rand_ids(2, 6)
    tensors = {k: v.detach() for k, v in p.prompt.export_tensors().items()}
    with torch.no_grad():
        out = p(ids)
    assert_close(out, ref_adapter(base, tensors, p.config.sites, ids))
    assert_changes(out, base, ids)


@pytest.mark.parametrize("side", ["left", "right"])
def test_mixed_padded_rows_each_get_their_own_logits(family, side):
    """Every method in one batch, rows of different lengths and rows with no prompt, padded on `side`."""
    base = fbase(family)
    prompts = [fprompt(family, n) for n in METHODS] + [None]
    rows = [row_ids(p, tokens(1 + (3 * i) % 7, seed=10 + i)) for i, p in enumerate(prompts)]
    check_rows_match_alone(base, prompts, rows, side, [alone(base, p, r) for p, r in zip(prompts, rows)])


@torch.no_grad()
def greedy_plain(base: sp.Base, prefix: torch.Tensor, ids: list[int], n: int) -> list[int]:
    """Reference generation: the plain model on inputs_embeds = [P ; E(x + generated)], no cache, argmax."""
    seq = list(ids)
    for _ in range(n):
        logits = ref_inputs_embeds(base, prefix, torch.tensor([seq]))
        seq.append(int(logits[0, -1].argmax()))
    return seq[len(ids):]


def test_greedy_generation_with_and_without_cache_equals_a_no_cache_loop(family):
    base = fbase(family)
    pt = fprompt(family, "prompt_tuning")
    row = tokens(5, seed=3)
    want = greedy_plain(base, pt.prompt.embeds.detach(), row, 4)
    for use_cache in (True, False):
        assert sp.generate_ids(base, [pt], [row], max_new_tokens=4, use_cache=use_cache, eos_token_id=[]) == [want]
    # the other methods (no plain-model loop for them): cached generation equals the uncached library loop
    prompts = [fprompt(family, n) for n in ("prefix_tuning", "deep_prompt", "adapter", "hybrid")] + [None]
    rows = [row_ids(p, tokens(2 + i, seed=30 + i)) for i, p in enumerate(prompts)]
    cached = sp.generate_ids(base, prompts, rows, max_new_tokens=4, use_cache=True, eos_token_id=[])
    assert cached == sp.generate_ids(base, prompts, rows, max_new_tokens=4, use_cache=False, eos_token_id=[])
    assert [len(t) for t in cached] == [4] * len(prompts)


PEFT_METHODS = {"prompt_tuning": "prompt_tuning", "p_tuning": "p_tuning_mlp", "prefix_tuning": "prefix_tuning"}


@pytest.mark.parametrize("method", list(PEFT_METHODS))
def test_peft_export_and_import_parity(family, method, tmp_path):
    """PEFT loads our export and computes our logits (right padding); importing it back gives the same prompt."""
    peft = pytest.importorskip("peft")
    from softprompt.interop import export_peft, import_peft

    base, p = fbase(family), fprompt(family, PEFT_METHODS[method])
    path = export_peft(p, tmp_path / "a")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT's own notices about the tiny model's config
        pm = peft.PeftModel.from_pretrained(family_model(family), str(path)).eval()
    ids, mask = rand_ids(2, 7), torch.ones(2, 7, dtype=torch.long)
    mask[0, 5:] = 0
    with torch.no_grad():
        ours = p(ids, mask)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # PEFT itself still passes `past_key_values`
            theirs = pm(input_ids=ids, attention_mask=mask).logits[:, -ids.shape[1]:]
        back = import_peft(path, base)(ids, mask)
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(back[real], ours[real], atol=1e-5, rtol=0)


def test_load_refuses_a_head_it_cannot_reproduce(family):
    """A model whose forward does more after the last hidden state than the known maps is refused at load."""
    model = family_model(family)
    forward = model.forward

    def shifted(*args, **kwargs):
        out = forward(*args, **kwargs)
        out.logits = out.logits + 1.0  # an unknown post-processing
        return out

    model.forward = shifted
    with pytest.raises(sp.InputError, match=type(model).__name__):
        sp.load_base((model, tiny_tokenizer()))


def test_opt_with_an_embedding_projection():
    """OPT-350m's layout: embeddings 16 wide, projected in and out of 32-wide layers. Methods acting on the
    embeddings or the K/V are exact; deep prompt tuning and adapters are refused with the reason."""
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.OPTConfig(vocab_size=99, hidden_size=32, ffn_dim=37, num_hidden_layers=2, num_attention_heads=4,
                       word_embed_proj_dim=16, dropout=0.0, pad_token_id=0, eos_token_id=1, init_std=0.2)
    base = sp.load_base((tf.OPTForCausalLM(cfg).eval(), tiny_tokenizer()))
    assert base.facts.hidden_size == 16
    ids = rand_ids(2, 6)
    pt = make_prompt(base, "prompt_tuning")
    pf = make_prompt(base, "prefix_tuning")
    with torch.no_grad():
        assert_close(pt(ids), ref_inputs_embeds(base, pt.prompt.embeds.detach(), ids))
        assert_close(pf(ids), ref_past_kv(base, *pf.prompt.kv(), ids))
    for name in ("deep_prompt", "adapter"):
        with pytest.raises(sp.InputError, match="word_embed_proj_dim"):
            make_prompt(base, name)(ids)


def test_encoder_decoder_and_state_space_models_are_refused_by_family():
    import transformers as tf

    t5 = tf.T5ForConditionalGeneration(tf.T5Config(vocab_size=99, d_model=32, d_ff=37, num_layers=2, num_heads=4,
                                                   d_kv=8, decoder_start_token_id=0))
    with pytest.raises(sp.InputError, match=r"T5ForConditionalGeneration \(t5\) is an encoder-decoder"):
        sp.load_base((t5, tiny_tokenizer()))
    mamba = tf.MambaForCausalLM(tf.MambaConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, state_size=4))
    with pytest.raises(sp.InputError, match=r"MambaForCausalLM \(mamba\) keeps no attention keys and values"):
        sp.load_base((mamba, tiny_tokenizer()))
