"""Context compression (training/distill.py, teacher.py) on tiny random models: KL, training, cache, errors."""

from __future__ import annotations

import hashlib
import json
import random

import pytest
import torch

import softprompt as sp
from softprompt.errors import ConfigError, InputError
from softprompt.methods.prefix_tuning import PrefixTuning, PrefixTuningConfig
from softprompt.methods.prefix_tuning.module import prefill_kv
from softprompt.model.compat import cache_kw
from softprompt.training import distill, teacher
from softprompt.training.distill import DistillConfig, compress
from tests.tiny import tiny_base

CONTEXT = "Rule: answer with the word after the colon, twice. Example: cat -> cat cat. Example: sun -> sun sun.\n"
SHORT = "Rule: say it twice. cat -> cat cat.\n"  # fits the tiny gemma3's 64-token sliding window with a query


def _context(arch: str) -> str:
    return SHORT if arch == "gemma3" else CONTEXT


def _queries(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["Q: " + "".join(rng.choice("abcdefgh xyz") for _ in range(rng.randint(4, 10))) + " ->" for _ in range(n)]


@pytest.fixture(scope="module")
def peaky():
    return tiny_base("llama", init_range=0.2)


def _cfg(**kw) -> DistillConfig:
    base = dict(tokens=4, steps=30, batch_size=8, continuation_tokens=3, top_k=16, held_out=8, warmup_steps=3)
    return DistillConfig(**{**base, **kw})


def _plain_logprobs(base, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return base.model(input_ids=torch.tensor([ids])).logits[0].float().log_softmax(-1)  # [T,V]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3", "qwen2"])
def test_teacher_cache_equals_plain_concatenation(arch):
    """The cached teacher (context as a K/V prefix) gives the same log-probs as the plain model on
    [context ; query ; continuation], at every continuation position."""
    base = tiny_base(arch)
    ctx = base.tokenizer(_context(arch))["input_ids"]
    qs = teacher.normalise_queries(_queries(3), base.tokenizer)
    cfg = _cfg(top_k=10, temperature=2.0)
    cache = teacher.teacher_cache(base, teacher.context_prompt(base, ctx), qs, cfg)
    assert cache.temperatures == (1.0, 2.0)
    for i, q in enumerate(qs):
        cont = cache.conts[i]
        assert len(cont) == cfg.continuation_tokens
        lp = _plain_logprobs(base, ctx + q["ids"] + cont)
        pos = torch.arange(len(ctx) + len(q["ids"]) - 1, len(ctx) + len(q["ids"]) - 1 + len(cont))
        ref = lp[pos].gather(1, cache.top_ids[i])  # [m,K]
        assert torch.allclose(cache.top_logp[i][0], ref, atol=1e-4)
        assert cont == lp[pos].argmax(-1).tolist()  # greedy continuation of the teacher itself


def test_binned_kl_is_exact_with_full_vocab_and_a_lower_bound_otherwise():
    g = torch.Generator().manual_seed(0)
    t_logits, s_logits = torch.randn(5, 99, generator=g) * 3, torch.randn(5, 99, generator=g) * 3
    exact = (t_logits.softmax(-1) * (t_logits.log_softmax(-1) - s_logits.log_softmax(-1))).sum(-1)
    ids = t_logits.topk(99).indices
    full = teacher.binned_kl(s_logits, ids, t_logits.log_softmax(-1).gather(1, ids), 1.0)
    assert torch.allclose(full, exact, atol=1e-4)
    ids8 = t_logits.topk(8).indices
    part = teacher.binned_kl(s_logits, ids8, t_logits.log_softmax(-1).gather(1, ids8), 1.0)
    assert (part <= exact + 1e-5).all() and (part > 0).all()
    same = teacher.binned_kl(t_logits, ids8, t_logits.log_softmax(-1).gather(1, ids8), 1.0)
    assert same.abs().max() < 1e-5


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_student_equal_to_teacher_has_zero_kl(arch):
    """A prefix student holding the context's full K/V (k == context length) IS the teacher: KL ~ 0 and full
    agreement through the student's code path; the plain model (no context) is measurably different."""
    base = tiny_base(arch, init_range=0.2)
    ctx = base.tokenizer(CONTEXT)["input_ids"]
    cache = teacher.teacher_cache(base, teacher.context_prompt(base, ctx),
                                  teacher.normalise_queries(_queries(12), base.tokenizer), _cfg())
    keys, values = prefill_kv(base, ctx)
    student = sp.Prompted(base, PrefixTuning(PrefixTuningConfig(num_virtual_tokens=len(ctx)), keys, values))
    fid = teacher.fidelity(base, student, cache)
    assert fid["kl"] < 1e-4 and fid["agreement"] == 1.0
    assert fid["positions"] == sum(len(c) for c in cache.conts)
    assert teacher.fidelity(base, None, cache)["kl"] > 1e-2


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_prefix_init_last_k_keeps_relative_positions(arch):
    """prefix_init='last': the student starts exactly as the teacher attending only to the last k context
    positions at their original positions (RoPE keys rotated to slots 0..k-1)."""
    from transformers import DynamicCache

    base = tiny_base(arch)
    ctx = base.tokenizer(_context(arch))["input_ids"]
    n, k = len(ctx), 6
    q = base.tokenizer("Q: abc ->", add_special_tokens=False)["input_ids"]
    student = distill.init_student(base, ctx, _cfg(form="prefix", tokens=k, prefix_init="last"))
    got = student(torch.tensor([q]))[0].float()
    keys, values = prefill_kv(base, ctx)  # reference: the original cache, cut to its last k positions
    cache = DynamicCache(config=base.model.config)
    for layer in range(keys.shape[0]):
        cache.update(keys[None, layer, :, n - k:], values[None, layer, :, n - k:], layer)
    with torch.no_grad():
        ref = base.model(input_ids=torch.tensor([q]), **cache_kw(base.model, cache),
                         position_ids=torch.arange(n, n + len(q))[None],
                         attention_mask=torch.ones(1, k + len(q), dtype=torch.long)).logits[0].float()
    assert torch.allclose(got, ref, atol=1e-4)


@pytest.mark.parametrize("form", ["prompt", "prefix"])
def test_kl_decreases_with_training_and_base_stays_frozen(peaky, form):
    before_w = {k: v.clone() for k, v in peaky.model.state_dict().items()}
    res = compress(peaky, CONTEXT, _queries(48), _cfg(form=form, steps=40, lr=3e-2), progress=False)
    assert res.fidelity["kl"] < 0.7 * res.before["kl"], (res.before, res.fidelity)
    kls = [h["kl"] for h in res.history if "kl" in h]
    assert sum(kls[-5:]) / 5 < 0.7 * sum(kls[:5]) / 5
    assert res.fidelity["kl"] < res.no_context["kl"]
    for k, v in peaky.model.state_dict().items():
        assert torch.equal(v, before_w[k]), k


def test_teacher_runs_once_per_query(peaky, monkeypatch):
    seen: list[tuple[int, ...]] = []
    real = teacher.teacher_rollout

    def counting(base, teacher, queries, *a, **kw):
        seen.extend(tuple(q) for q in queries)
        return real(base, teacher, queries, *a, **kw)

    monkeypatch.setattr(teacher, "teacher_rollout", counting)
    qs = _queries(20, seed=1)
    res = compress(peaky, CONTEXT, qs, _cfg(steps=12, batch_size=4, held_out=4), progress=False)  # 3 epochs
    assert len(res.train) == 16 and len(res.held) == 4
    assert len(seen) == 20 and len(set(seen)) == len({tuple(peaky.tokenizer(q, add_special_tokens=False)
                                                             ["input_ids"]) for q in qs})


def test_bad_inputs_raise_clear_errors(peaky):
    qs = _queries(10)
    with pytest.raises(InputError, match="context is empty"):
        compress(peaky, "   \n", qs, _cfg(), progress=False)
    with pytest.raises(InputError, match="more than the limit of 20"):
        compress(peaky, CONTEXT, qs, _cfg(max_tokens=20), progress=False)
    n = len(peaky.tokenizer(CONTEXT)["input_ids"])
    with pytest.raises(InputError, match=f"tokens={n} is not smaller than the context's {n} tokens"):
        compress(peaky, CONTEXT, qs, _cfg(tokens=n), progress=False)
    with pytest.raises(InputError, match="2 queries do not fit"):
        compress(peaky, CONTEXT, qs + ["x" * 60, "y" * 70], _cfg(max_tokens=n + 40), progress=False)
    with pytest.raises(InputError, match="no queries"):
        compress(peaky, CONTEXT, [], _cfg(), progress=False)
    with pytest.raises(InputError, match="empty"):
        compress(peaky, CONTEXT, ["ok", "  "], _cfg(), progress=False)
    with pytest.raises(ConfigError) as e:
        DistillConfig(form="lora", tokens=0, temperature=0)
    assert len(e.value.problems) == 3


def test_artifact_records_ratio_and_fidelity_and_trains_further(peaky, tmp_path):
    res = compress(peaky, CONTEXT, _queries(30), _cfg(steps=10), progress=False)
    path = res.prompted.save(tmp_path / "p")
    raw = (path / "manifest.json").read_text()
    extra = json.loads(raw)["extra"]["compression"]
    n = len(peaky.tokenizer(CONTEXT)["input_ids"])
    assert extra["context_tokens"] == n and extra["ratio"] == pytest.approx(n / 4)
    assert extra["context_sha256"] == hashlib.sha256(CONTEXT.encode()).hexdigest()
    assert extra["fidelity"]["kl"] == pytest.approx(res.fidelity["kl"]) and extra["fidelity"]["on"] == "held-out"
    assert 0 <= extra["fidelity"]["agreement"] <= 1
    assert "answer with the word" not in raw  # never the context text by default
    loaded = sp.load_prompt(path, peaky)
    q = torch.tensor([peaky.tokenizer("Q: ab ->")["input_ids"]])
    assert torch.allclose(loaded(q), res.prompted(q), atol=1e-5)
    before = loaded.prompt.embeds.detach().clone()
    distill.distill(loaded, res.train, _cfg(steps=2, warmup_steps=0), progress=False)  # trainable further
    assert not torch.equal(before, loaded.prompt.embeds.detach())
    stored = compress(peaky, CONTEXT, _queries(10), _cfg(steps=1), store_context=True, progress=False)
    assert stored.prompted.extra["compression"]["context"] == CONTEXT


def test_self_generated_queries_and_cross_entropy(peaky):
    res = compress(peaky, CONTEXT, None, _cfg(auto_queries=20, steps=4, ce_weight=0.5, temperature=2.0),
                   progress=False)
    c = res.prompted.extra["compression"]
    assert c["queries"]["self_generated"] and c["queries"]["train"] + c["queries"]["held_out"] == 20
    assert all(8 >= 1 and 1 <= len(q) <= 24 for q in res.train.queries)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in res.history if "loss" in h)


def test_cli_compress(peaky, tmp_path, monkeypatch, capsys):
    from softprompt.cli.main import main

    monkeypatch.setattr(sp, "load_base", lambda *a, **kw: peaky)
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("\n".join(json.dumps({"query": q}) for q in _queries(20)))
    rc = main(["compress", "--context-text", CONTEXT, "--queries", str(qfile), "--tokens", "4", "--steps", "3",
               "--form", "prefix", "--continuation-tokens", "2", "--out", str(tmp_path / "run"), "--no-progress",
               "--timing-queries", "2", "--timing-repeats", "1"])
    out = capsys.readouterr().out
    assert rc == 0 and "compressed (prefix_tuning)" in out and "prefill ms" in out
    rows = json.loads((tmp_path / "run" / "report.json").read_text())["rows"]
    assert [r["prompt"] for r in rows] == ["full context", "compressed (prefix_tuning)", "no context"]
    assert rows[0]["kl"] < 1e-4 and rows[0]["agreement"] == 1.0  # the teacher measured against its own cache
    assert sp.load_prompt(tmp_path / "run" / "prompt", peaky).method == "prefix_tuning"
    assert main(["compress", "--context-text", "", "--out", str(tmp_path / "bad")]) == 2
    assert "context is empty" in capsys.readouterr().err
    assert main(["compress", "--demo", "product", "--limit", "5", "--out", str(tmp_path / "bad")]) == 2
    assert "the product demo has no option test_limit (--limit is test_limit" in capsys.readouterr().err
    assert main(["compress", "--demo", "persona", "--answers", "--out", str(tmp_path / "bad")]) == 2
    assert "the persona demo has no option answers" in capsys.readouterr().err


def test_demo_cases_are_deterministic_and_do_not_leak():
    from softprompt.training.contexts import few_shot_records, persona_case, rotten_tomatoes_case
    from softprompt.training.run import load_data

    train = load_data("rotten_tomatoes").train
    shots = few_shot_records(train)
    assert [r["label"] for r in shots] == ["negative", "positive"] * 4 and all(r in train for r in shots)
    case = rotten_tomatoes_case(test_limit=5)
    assert case.context == rotten_tomatoes_case(test_limit=5).context
    assert all(r["text"] in case.context for r in shots)
    assert not any(q.split("\n")[0] in case.context for q in case.queries + case.held_out)  # no shot is a query
    persona = persona_case()
    assert not set(persona.queries) & set(persona.held_out) and len(persona.held_out) == 40


def test_product_demo_asks_only_what_the_context_says(peaky):
    from softprompt.training.contexts import FACTS, product_case

    case = product_case()
    assert case.context == product_case().context
    assert not set(case.queries) & set(case.held_out)
    assert len(case.queries) == len(case.held_out) == 2 * len(FACTS)
    for _, sentence, answer, candidates, phrasings in FACTS:
        assert sentence in case.context and answer in sentence  # the context holds every answer...
        assert answer in candidates and len(set(candidates)) == 4
        assert len(set(phrasings)) == 4 and not any(p in case.context for p in phrasings)  # ...not the questions
    score = case.metric(peaky, None)
    assert 0 <= score <= 1 and round(score * len(case.held_out)) == score * len(case.held_out)


def test_product_demo_more_training_phrasings_keep_the_held_out_questions_unseen():
    import re

    from softprompt.training.contexts import FACTS, MORE_TRAIN_PHRASINGS, PRODUCT_MAX_TRAIN_PHRASINGS, product_case

    def words(q: str) -> set[str]:
        return set(re.findall(r"[a-z0-9']+", q.lower()))

    default = product_case()
    assert PRODUCT_MAX_TRAIN_PHRASINGS == 5
    for n in range(1, PRODUCT_MAX_TRAIN_PHRASINGS + 1):
        case = product_case(train_phrasings=n)
        assert case.held_out == default.held_out  # the same 36 held-out questions, whatever trains
        assert len(case.queries) == len(set(case.queries)) == n * len(FACTS)
        assert not set(case.queries) & set(case.held_out)
    assert set(MORE_TRAIN_PHRASINGS) == {f[0] for f in FACTS}
    for attr, _, _, _, phrasings in FACTS:
        for q in MORE_TRAIN_PHRASINGS[attr]:
            assert q not in default.context and q not in phrasings
            assert all(len(words(q) & words(h)) / len(words(q) | words(h)) <= 0.7 for h in phrasings[2:]), q
    with pytest.raises(ValueError, match="train_phrasings"):
        product_case(train_phrasings=6)


def test_product_demo_answers_are_each_facts_true_answer_and_make_demo_checks_its_options():
    from softprompt.training.contexts import FACTS, MORE_TRAIN_PHRASINGS, PRODUCT_QUERY, make_demo, product_case

    plain, with_answers = product_case(train_phrasings=3), make_demo("product", train_phrasings=3, answers=True)
    assert [q["query"] for q in with_answers.queries] == plain.queries  # the same queries, now with a reference
    facts = {PRODUCT_QUERY.format(q=q): answer for attr, _, answer, _, phr in FACTS
             for q in phr[:2] + MORE_TRAIN_PHRASINGS[attr]}  # every training phrasing -> its fact's answer
    assert all(q["answer"] == " " + facts[q["query"]] for q in with_answers.queries)
    assert with_answers.queries[0]["answer"] == " " + FACTS[0][2]
    assert with_answers.held_out == plain.held_out and all(isinstance(q, str) for q in with_answers.held_out)
    assert make_demo("product", test_limit=None).queries == product_case().queries  # None keeps the default
    with pytest.raises(ValueError, match="no option test_limit"):
        make_demo("product", test_limit=5)
    with pytest.raises(ValueError, match="no option answers"):
        make_demo("persona", answers=True)
