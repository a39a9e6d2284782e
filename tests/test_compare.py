"""softprompt compare: the decision obeys constraints; a tiny end-to-end run writes every section and plot."""

from __future__ import annotations

import csv
import random

import pytest

from softprompt.report.compare import SECTIONS, Constraints, Measurement, measure, recommend, write_report
from softprompt.templates import Template, Verbalizer
from softprompt.training.task import Task
from softprompt.training.tune import TrainConfig
from tests.tiny import tiny_base, tiny_model, tiny_tokenizer


def m(method, acc, ms, size, emb, tokens=20):
    return Measurement(method=method, accuracy=acc, trainable_params=1000, bytes_per_task=size, train_seconds=1.0,
                       virtual_tokens=tokens, latency_ms=ms, embedding_only=emb, n_test=100)


SYNTH = [m("prompt_tuning", 0.80, 10.0, 47_000, True), m("prefix_tuning", 0.86, 12.0, 920_000, False),
         m("p_tuning", 0.805, 9.0, 47_500, True), m("adapter", 0.90, 25.0, 4_600_000, False, tokens=0)]


def test_no_constraints_picks_the_most_accurate():
    rec = recommend(SYNTH)
    assert rec.choice == "adapter"
    assert rec.ranking == ["adapter", "prefix_tuning", "p_tuning", "prompt_tuning"]
    assert not rec.rejected


def test_embedding_only_excludes_kv_and_adapter_methods_and_breaks_ties_on_latency():
    rec = recommend(SYNTH, Constraints(embedding_only=True))
    assert set(rec.rejected) == {"prefix_tuning", "adapter"}
    # 0.805 and 0.80 are tied within 0.01: the faster p_tuning wins
    assert rec.choice == "p_tuning"
    assert rec.ranking == ["p_tuning", "prompt_tuning"]
    text = " ".join(rec.reasons)
    assert "embedding-only" in text and "Without the constraints adapter would be chosen" in text


def test_a_reference_row_is_compared_against_but_never_recommended():
    lora = Measurement(method="lora", accuracy=0.95, trainable_params=460_800, bytes_per_task=1_900_000,
                       train_seconds=1.0, virtual_tokens=0, latency_ms=5.0, embedding_only=False, n_test=100,
                       reference=True)
    rec = recommend([*SYNTH, lora])
    assert rec.choice == "adapter" and "lora" not in rec.ranking
    assert any("lora (the reference to beat" in r and "adapter is -0.050 against it (below it)" in r
               for r in rec.reasons)


def test_tie_on_accuracy_and_latency_goes_to_fewer_bytes():
    ms = [m("a", 0.8, 10.0, 2000, True), m("b", 0.8, 10.0, 1000, True)]
    assert recommend(ms).choice == "b"
    # 10.3 ms is within the 5% timing-noise tolerance of 10.0 ms: bytes decide
    ms = [m("a", 0.8, 10.0, 2000, True), m("b", 0.805, 10.3, 1000, True)]
    rec = recommend(ms)
    assert rec.choice == "b" and any("as fast within timing noise" in r for r in rec.reasons)
    # 12 ms is not: latency decides
    ms = [m("a", 0.8, 10.0, 2000, True), m("b", 0.805, 12.0, 1000, True)]
    assert recommend(ms).choice == "a"
    assert recommend(ms, Constraints(latency_tolerance=0.25)).choice == "b"


def test_tolerance_zero_makes_small_differences_count():
    rec = recommend(SYNTH, Constraints(embedding_only=True, accuracy_tolerance=0.0))
    assert rec.choice == "p_tuning"  # 0.805 > 0.80
    rec = recommend([m("a", 0.80, 5.0, 10, True), m("b", 0.805, 50.0, 10, True)], Constraints(accuracy_tolerance=0.0))
    assert rec.choice == "b"


def test_bytes_and_latency_limits():
    rec = recommend(SYNTH, Constraints(max_bytes_per_task=1_000_000))
    assert rec.choice == "prefix_tuning" and "adapter" in rec.rejected
    assert "bytes per task" in rec.rejected["adapter"][0]
    rec = recommend(SYNTH, Constraints(max_latency_ms=11.0))
    assert rec.choice == "p_tuning"
    assert set(rec.rejected) == {"prefix_tuning", "adapter"}


def test_nothing_eligible_says_which_constraints_bind():
    rec = recommend(SYNTH, Constraints(embedding_only=True, max_latency_ms=1.0))
    assert rec.choice is None and rec.ranking == []
    assert len(rec.rejected) == 4
    assert any("No method satisfies" in r for r in rec.reasons)


def _records(n, seed=0):
    rng = random.Random(seed)
    return [{"text": "".join(rng.choice("abcxyz") for _ in range(rng.randint(3, 8))),
             "label": "p" if rng.random() < 0.7 else "n"} for _ in range(n)]


def _check_report(out, methods):
    text = (out / "report.md").read_text()
    for sec in SECTIONS:
        assert f"## {sec}" in text, sec
    for name in ("accuracy", "trainable_params", "bytes_per_task", "train_seconds", "virtual_tokens", "latency_ms"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({name}.png)" in text
    for method in methods:
        assert method in text
        assert (out / "artifacts" / method / "manifest.json").is_file()
    assert "| lora (reference) |" in text and "the reference to beat" in text
    assert (out / "artifacts" / "lora" / "adapter_config.json").is_file()  # PEFT's own directory
    return text


def test_measure_and_report_end_to_end(tmp_path):
    base = tiny_base("llama")
    task = Task(Template.parse("{text}:{label}"), Verbalizer({"p": ["P"], "n": ["N"]}))
    methods = ["prompt_tuning", "prefix_tuning", "hybrid", "adapter"]
    ms = measure(base, task, _records(48), _records(16, seed=1), methods, TrainConfig(steps=3, batch_size=8,
                 warmup_steps=1), tmp_path, num_virtual_tokens=4, hybrid_template="{soft:2}{text}{soft:2|=}:{label}",
                 latency_batch=4, latency_repeats=3)
    assert [x.method for x in ms] == [*methods, "lora"]
    by = {x.method: x for x in ms}
    assert by["lora"].reference and not any(x.reference for x in ms[:-1])
    assert by["lora"].trainable_params > by["prompt_tuning"].trainable_params and by["lora"].latency_ms > 0
    assert by["prompt_tuning"].embedding_only and not by["prefix_tuning"].embedding_only
    assert by["adapter"].virtual_tokens == 0 and by["hybrid"].virtual_tokens == 4
    assert by["prefix_tuning"].bytes_per_task > by["prompt_tuning"].bytes_per_task
    assert all(x.latency_ms > 0 and x.train_seconds > 0 and 0 <= x.accuracy <= 1 and x.n_test == 16 for x in ms)
    rec = recommend(ms, Constraints(embedding_only=True))
    assert rec.choice in ("prompt_tuning", "hybrid")
    assert "lora" not in rec.ranking and "lora" not in rec.rejected  # the row to beat, never a candidate
    text = _check_report(write_report(ms, rec, tmp_path, {"base": "tiny llama"}).parent, methods)
    assert f"**{rec.choice}**" in text and "prefix_tuning is excluded" in text


def test_cli_compare_writes_the_report(tmp_path, capsys):
    from softprompt.cli.main import main

    model_dir = tmp_path / "tiny"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    data = tmp_path / "data.csv"
    with open(data, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(_records(40))
    out = tmp_path / "report"
    rc = main(["compare", "--base", str(model_dir), "--data", str(data), "--template", "{text}:{label}",
               "--labels", '{"p": ["P"], "n": ["N"]}', "--methods", "prompt_tuning,prefix_tuning", "--steps", "2",
               "--num-virtual-tokens", "3", "--latency-repeats", "2", "--constraint", "embedding-only",
               "--max-bytes-per-task", "64KiB", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert "recommendation: prompt_tuning" in capsys.readouterr().out
    text = _check_report(out, ["prompt_tuning", "prefix_tuning"])
    assert "embedding-only serving, at most 65,536 bytes per task" in text


@pytest.mark.parametrize("s,n", [("65536", 65536), ("64KiB", 65536), ("1.5MB", 1_500_000), ("2 mib", 2 * 2**20)])
def test_parse_bytes(s, n):
    from softprompt.cli.cmd_compare import parse_bytes

    assert parse_bytes(s) == n
