"""Training recipe: convergence on tiny tasks, exact resume, NaN detection, fast path == full path."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

import softprompt as sp
from softprompt.templates import Template, Verbalizer
from softprompt.training import tune
from softprompt.training.task import Task, evaluate
from softprompt.training.tune import TrainConfig, train
from tests.tiny import tiny_base

METHODS = ["prompt_tuning", "deep_prompt", "prefix_tuning", "p_tuning", "adapter", "hybrid"]


def _config(method: str):
    cls = sp.registry.get(method).config_cls
    if method == "adapter":
        return cls(bottleneck=4)
    if method == "hybrid":
        return cls(template="{soft:2}{text}{soft:2|=}:{label}")
    return cls(num_virtual_tokens=4)


def _records(n: int, seed: int = 0, p_share: float = 0.8):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        y = rng.random() < p_share
        text = "".join(rng.choice("abcxyz") for _ in range(rng.randint(3, 8)))
        out.append({"text": text, "label": "p" if y else "n"})
    return out


@pytest.fixture(scope="module")
def llama():
    return tiny_base("llama")


def _cls_task(template="{text}:{label}"):
    return Task(Template.parse(template), Verbalizer({"p": ["P"], "n": ["N"]}))


@pytest.mark.parametrize("method", METHODS)
def test_every_method_learns_the_label_prior(llama, method):
    """80% of labels are one class, chosen as the class the untrained prompt does NOT favour (initial accuracy
    < 0.5): any method that trains must move validation accuracy to >= 0.75 and lower the validation loss."""
    recs = _records(240)
    p = sp.attach(llama, _config(method))
    template = getattr(p.config, "template", "{text}:{label}")  # a hybrid prompt brings its own template
    task = _cls_task(template)
    va = task.encode_all(recs[200:], llama.tokenizer)
    if evaluate(llama, p, task, va)["accuracy"] > 0.5:
        task = Task(Template.parse(template), Verbalizer({"p": ["N"], "n": ["P"]}))
    tr, va = task.encode_all(recs[:200], llama.tokenizer), task.encode_all(recs[200:], llama.tokenizer)
    before = evaluate(llama, p, task, va)
    assert before["accuracy"] < 0.5
    res = train(p, task, tr, va, TrainConfig(steps=40, batch_size=16, eval_every=20, warmup_steps=5), progress=False)
    after = evaluate(llama, p, task, va)
    assert res.best_metric >= 0.75
    assert after["accuracy"] == pytest.approx(res.best_metric)  # best parameters are loaded back
    assert after["loss"] < before["loss"]


def test_generation_task_loss_is_on_answer_tokens_only(llama):
    task = Task(Template.parse("{text}={answer}", answer_field="answer"))
    ex = task.encode({"text": "abc", "answer": "xy"}, llama.tokenizer)
    assert ex.answer == task.template.answer_ids("xy", llama.tokenizer)
    p = sp.attach(llama, sp.PromptTuningConfig(num_virtual_tokens=3))
    loss, stats = task.loss(llama, [p], [ex])
    # reference: full forward, cross-entropy only at the positions predicting the answer tokens
    ids = torch.tensor([ex.ids + ex.answer])
    logits = sp.forward_mixed(llama, [p], ids)[0]
    n = len(ex.answer)
    ref = torch.nn.functional.cross_entropy(logits[-n - 1:-1], torch.tensor(ex.answer))
    assert torch.allclose(loss, ref, atol=1e-5)
    assert stats["count"] == n


def test_generation_training_converges():
    llama = tiny_base("llama", init_range=0.2)  # default tiny logits are too flat to fit any target closely
    task = Task(Template.parse("{text}={answer}", answer_field="answer"))
    recs = [{"text": t, "answer": "ok"} for t in ("ab", "cde", "xyz", "hello", "q")] * 8
    ex = task.encode_all(recs, llama.tokenizer)
    p = sp.attach(llama, sp.PromptTuningConfig(num_virtual_tokens=4))
    cfg = TrainConfig(steps=80, batch_size=8, eval_every=40, lr=3e-2)  # tiny random model: a higher lr than smollm2's
    res = train(p, task, ex, ex[:5], cfg, progress=False)
    assert res.best_metric == 1.0  # every answer token predicted
    out = p.generate(["xyz="], max_new_tokens=2)  # greedy decoding reproduces the teacher-forced answer
    assert out == ["ok"]


def test_fast_path_equals_full_vocabulary_path(llama):
    task = _cls_task("{text}:{label}")
    task_single = Task(Template.parse("{text}:{label}"), Verbalizer({"p": ["P"], "n": ["N"]}))
    exs = task.encode_all(_records(6), llama.tokenizer)
    # single-token words: make them single tokens by a template that ends in a space
    t2 = Task(Template.parse("{text}: {label}"), Verbalizer({"p": ["P"], "n": ["N"]}))
    assert t2.verbalizer.single_token(llama.tokenizer) or not task_single.verbalizer.single_token(llama.tokenizer)
    p = sp.attach(llama, sp.PromptTuningConfig(num_virtual_tokens=3))
    ex2 = t2.encode_all(_records(6), llama.tokenizer)
    words = t2.word_ids(llama.tokenizer)
    fast = t2.class_scores(llama, [p] * 6, ex2)
    slow = t2._multi_token_scores(llama, [p] * 6, ex2, words)
    # the fast path drops the per-row normaliser: differences between classes must agree
    assert torch.allclose(fast[:, 0] - fast[:, 1], slow[:, 0] - slow[:, 1], atol=1e-5)
    assert exs  # multi-token task encodes too


@pytest.mark.parametrize("ema", [0.0, 0.8])
def test_resume_continues_exactly(llama, tmp_path, monkeypatch, ema):
    task = _cls_task()
    recs = _records(64)
    tr = task.encode_all(recs, llama.tokenizer)
    cfg = TrainConfig(steps=12, batch_size=8, eval_every=4, checkpoint_every=3, warmup_steps=2, ema=ema)

    def fresh():
        return sp.attach(llama, sp.PTuningConfig(num_virtual_tokens=3, encoder="lstm"))

    ref = train(fresh(), task, tr, tr[:16], cfg, out_dir=tmp_path / "ref", progress=False)
    ref_losses = [r["loss"] for r in ref.history if r["kind"] == "train"]

    calls = {"n": 0}
    real = tune._micro_step

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 8:  # killed in the middle of step 8 (after the step-6 checkpoint)
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(tune, "_micro_step", dying)
    with pytest.raises(KeyboardInterrupt):
        train(fresh(), task, tr, tr[:16], cfg, out_dir=tmp_path / "run", progress=False)
    monkeypatch.setattr(tune, "_micro_step", real)
    resumed_prompt = fresh()
    res = train(resumed_prompt, task, tr, tr[:16], cfg, out_dir=tmp_path / "run", progress=False)
    losses = [r["loss"] for r in res.history if r["kind"] == "train"]
    assert len(losses) == 12
    assert losses == pytest.approx(ref_losses, abs=1e-6)
    evals = [r["loss"] for r in res.history if r["kind"] == "eval"]  # with ema: the restored average's
    assert evals == pytest.approx([r["loss"] for r in ref.history if r["kind"] == "eval"], abs=1e-6)
    assert res.best_step == ref.best_step
    with torch.no_grad():
        ids = torch.tensor([[5, 6, 7]])
        assert torch.allclose(resumed_prompt(ids), sp.load_prompt(tmp_path / "ref" / "best", llama)(ids), atol=1e-6)


def test_ema_averages_the_trajectory_without_changing_it(llama):
    """With `ema` the optimizer follows the same path (same losses); the prompt left at the end of a run without
    validation is the average of the parameters after each step, with decay min(ema, (1+t)/(10+t))."""
    task = _cls_task()
    tr = task.encode_all(_records(48), llama.tokenizer)
    cfg = TrainConfig(steps=10, batch_size=8, warmup_steps=2, lr=5e-2)

    def run(ema: float):
        p = sp.attach(llama, sp.PromptTuningConfig(num_virtual_tokens=3))
        seen = [p.prompt.embeds.detach().clone()]
        track = lambda rec: rec["kind"] == "train" and seen.append(p.prompt.embeds.detach().clone())  # noqa: E731
        res = train(p, task, tr, [], dataclasses.replace(cfg, ema=ema), progress=False, trackers=[track])
        return p, seen, [r["loss"] for r in res.history if r["kind"] == "train"]

    plain, path, losses = run(0.0)
    averaged, path_ema, losses_ema = run(0.5)
    assert losses_ema == losses
    for a, b in zip(path, path_ema):  # the trackers see the trained parameters, not the average
        assert torch.equal(a, b)
    avg = path[0].clone()
    for t, p in enumerate(path[1:]):
        avg += (1 - min(0.5, (1 + t) / (10 + t))) * (p - avg)
    assert torch.allclose(averaged.prompt.embeds, avg, atol=1e-6)
    assert not torch.allclose(averaged.prompt.embeds, plain.prompt.embeds, atol=1e-3)  # the average is not the end


def test_ema_evaluates_and_keeps_the_average(llama):
    task = _cls_task()
    recs = _records(96)
    tr, va = task.encode_all(recs[:64], llama.tokenizer), task.encode_all(recs[64:], llama.tokenizer)
    cfg = TrainConfig(steps=12, batch_size=8, eval_every=4, warmup_steps=2, lr=5e-2)
    plain = train(sp.attach(llama, sp.PromptTuningConfig(num_virtual_tokens=3)), task, tr, va, cfg, progress=False)
    p = sp.attach(llama, sp.PromptTuningConfig(num_virtual_tokens=3))
    res = train(p, task, tr, va, dataclasses.replace(cfg, ema=0.7), progress=False)
    evals = [r for r in res.history if r["kind"] == "eval"]
    for a, b in zip(evals, (r for r in plain.history if r["kind"] == "eval")):  # evaluated: the average
        assert a["loss"] != pytest.approx(b["loss"], abs=1e-6)
    best = max(evals, key=lambda r: r["accuracy"])
    assert evaluate(llama, p, task, va)["loss"] == pytest.approx(best["loss"], abs=1e-6)  # kept: the best average


def test_train_config_refuses_an_ema_outside_0_1():
    with pytest.raises(sp.ConfigError, match="ema=1"):
        TrainConfig(ema=1.0)


def test_non_finite_loss_stops_with_clear_message(llama):
    task = _cls_task()
    tr = task.encode_all(_records(16), llama.tokenizer)
    p = sp.attach(llama, sp.PromptTuningConfig(num_virtual_tokens=3))
    with torch.no_grad():
        p.prompt.embeds[0, 0] = float("nan")
    with pytest.raises(sp.TrainingError, match="non-finite"):
        train(p, task, tr, [], TrainConfig(steps=3, batch_size=8), progress=False)


def test_hybrid_prompt_refuses_a_task_without_its_template(llama):
    p = sp.attach(llama, _config("hybrid"))
    task = _cls_task("{text}:{label}")
    tr = task.encode_all(_records(8), llama.tokenizer)
    with pytest.raises(sp.InputError, match="template"):
        train(p, task, tr, [], TrainConfig(steps=1), progress=False)


def test_train_config_reports_every_problem():
    with pytest.raises(sp.ConfigError) as e:
        TrainConfig(steps=0, batch_size=0, schedule="weird")
    assert len(e.value.problems) == 3
    assert "schedule='weird'" in str(e.value)


def test_long_inputs_lose_the_end_of_their_longest_field_not_the_template():
    from tests.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    task = Task(Template.parse("{soft:3}Q: {text} / {note}\nA:{label}"), Verbalizer({"p": ["p"], "n": ["n"]}),
                max_length=24)
    ex = task.encode({"text": "abcdefghijklmnopqrstuvwxyz", "note": "xyz", "label": "p"}, tok)
    assert len(ex.ids) == 24
    assert ex.ids[:3] == [-1, -2, -3]  # the leading soft slot survives
    text = tok.decode([i for i in ex.ids if i >= 0])
    assert text.startswith("Q: abc") and text.endswith(" / xyz\nA:")  # the hard text and the short field survive
    short = task.encode({"text": "ab", "note": "xyz", "label": "p"}, tok)
    assert tok.decode([i for i in short.ids if i >= 0]) == "Q: ab / xyz\nA:"
    task.max_length = 18  # the template takes 12: the longest field empties, then the next one is cut
    both = task.encode({"text": "abcdefghij", "note": "0123456789", "label": "p"}, tok)
    assert len(both.ids) == 18 and tok.decode([i for i in both.ids if i >= 0]) == "Q:  / 012345\nA:"


def test_a_template_longer_than_max_length_is_refused():
    from softprompt.errors import InputError
    from tests.tiny import tiny_tokenizer

    task = Task(Template.parse("{soft:8}Question about this: {text}\nA:{label}"), Verbalizer({"p": ["p"]}),
                max_length=12)
    with pytest.raises(InputError, match="max_length=12"):
        task.encode({"text": "abc", "label": "p"}, tiny_tokenizer())
