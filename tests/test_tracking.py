"""Experiment tracking: metrics.jsonl, TensorBoard (report_to) and any callback tracker see the same scalars."""

from __future__ import annotations

import json

import pytest

import softprompt as sp
from softprompt.templates import Template, Verbalizer
from softprompt.training import tune
from softprompt.training.task import Task
from softprompt.training.tune import TrainConfig, train
from tests.tiny import tiny_base

pytest.importorskip("tensorboard")  # the `track` extra

CFG = TrainConfig(steps=8, batch_size=6, eval_every=3, checkpoint_every=2, warmup_steps=1, report_to="tensorboard")


def _setup():
    base = tiny_base("llama", init_range=0.2)
    task = Task(Template.parse("{text}:{label}"), Verbalizer({"p": ["P"], "n": ["N"]}))
    recs = [{"text": t, "label": "p" if i % 3 else "n"} for i, t in enumerate(["ab", "xyz", "hello", "q"] * 6)]
    return base, task, task.encode_all(recs, base.tokenizer)


def _tensorboard_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _expected(records) -> dict[str, list[tuple[int, float]]]:
    """What the JSONL says each scalar is: `<kind>/<name>` at `step`."""
    out: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        for k, v in r.items():
            if k not in ("kind", "step"):
                out.setdefault(f"{r['kind']}/{k}", []).append((r["step"], v))
    return out


def _assert_same(tb, want):
    assert tb.keys() == want.keys()
    for tag, points in want.items():
        assert [s for s, _ in tb[tag]] == [s for s, _ in points], tag
        assert [v for _, v in tb[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag  # float32 events


def test_tensorboard_and_a_callback_get_the_scalars_of_metrics_jsonl(tmp_path):
    base, task, ex = _setup()
    seen = []
    train(sp.attach(base, sp.PromptTuningConfig(num_virtual_tokens=3)), task, ex, ex[:8], CFG, out_dir=tmp_path,
          progress=False, trackers=[seen.append])
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert seen == records and {r["kind"] for r in records} == {"train", "eval"}
    tb = _tensorboard_scalars(tmp_path / "tensorboard")
    assert {"train/loss", "train/acc", "train/lr", "eval/accuracy", "eval/loss"} <= tb.keys()
    _assert_same(tb, _expected(records))


def test_a_resumed_run_leaves_one_event_per_step(tmp_path, monkeypatch):
    base, task, ex = _setup()
    real, calls = tune._micro_step, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 6:  # killed in step 6, after the step-4 checkpoint and step 5's events
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(tune, "_micro_step", dying)
    with pytest.raises(KeyboardInterrupt):
        train(sp.attach(base, sp.PromptTuningConfig(num_virtual_tokens=3)), task, ex, ex[:8], CFG,
              out_dir=tmp_path, progress=False)
    monkeypatch.setattr(tune, "_micro_step", real)
    train(sp.attach(base, sp.PromptTuningConfig(num_virtual_tokens=3)), task, ex, ex[:8], CFG, out_dir=tmp_path,
          progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == list(range(1, 9))
    _assert_same(_tensorboard_scalars(tmp_path / "tensorboard"), _expected(records))


def test_report_to_is_validated_before_training():
    with pytest.raises(sp.ConfigError, match="report_to='wandb'"):
        TrainConfig(report_to="wandb")
    base, task, ex = _setup()
    with pytest.raises(sp.InputError, match="out_dir"):
        train(sp.attach(base, sp.PromptTuningConfig(num_virtual_tokens=3)), task, ex, [], CFG, progress=False)
