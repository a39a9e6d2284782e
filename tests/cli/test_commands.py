"""Each command validates everything before the model loads, and the bugs of issue 12 stay fixed."""

from __future__ import annotations

import json

import pytest

from softprompt.cli.main import build_parser, main
from tests.cli.conftest import ModelLoaded


def _err(capsys) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_demo_with_an_unknown_method_fails_at_once(no_model, capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--method", "lora"])
    assert e.value.code == 2 and "invalid choice: 'lora'" in capsys.readouterr().err and no_model == []


@pytest.mark.parametrize("argv,fragment", [
    (["demo", "--num-virtual-tokens", "0"], "num_virtual_tokens=0"),
    (["demo", "--steps", "0"], "steps=0: must be >= 1"),
    (["train", "--num-virtual-tokens", "0"], "num_virtual_tokens=0"),
    (["train", "--lr", "50"], "lr=50.0: must be in (0, 10)"),
    (["train", "--method", "prompt_tuning", "--encoder", "lstm"], "--encoder does not apply to --method prompt_tuning"),
    (["train", "--method", "hybrid", "--num-virtual-tokens", "4"], "--num-virtual-tokens does not apply"),
    (["train", "--field", "text=review"], "built-in 'rotten_tomatoes' has the fields 'text' and 'label'"),
    (["eval", "--field", "text=review"], "--field maps the columns of a data file"),
    (["compare", "--methods", "prompt_tuning,lora"], "unknown ['lora']"),
    (["compare", "--steps", "0"], "steps=0"),
    (["compress", "--context-text", "x", "--num-virtual-tokens", "0"], "tokens=0: must be >= 1"),
    (["serve", "--registry", "r", "--max-batch-size", "0"], "max_batch_size"),
])
def test_bad_options_fail_before_the_model_loads(no_model, capsys, tmp_path, argv, fragment):
    assert main([*argv, "--out", str(tmp_path / "o")] if argv[0] in ("train", "demo", "compare", "compress")
                else argv) == 2
    assert fragment in _err(capsys)
    assert no_model == []


def test_train_seed_seeds_the_split_the_init_and_the_data_order(reviews_csv):
    from softprompt.cli.cmd_train import prepare

    argv = ["train", "--data", str(reviews_csv), "--field", "text=review", "--field", "label=sentiment",
            "--template", "{text}:{label}", "--labels", "good,bad"]
    p = build_parser()
    d3, c3, _, t3 = prepare(p.parse_args([*argv, "--seed", "3"]))
    d4, *_ = prepare(p.parse_args([*argv, "--seed", "4"]))
    assert c3.seed == 3 and t3.seed == 3
    assert d3.test != d4.test  # the split moves with the seed


def test_compress_held_out_file_is_used(no_model, tmp_path, monkeypatch):
    import softprompt.training.distill as distill

    held = tmp_path / "held.txt"
    held.write_text("first held query\nsecond\\nheld query\n")
    seen = {}

    def fake_compress(base, context, queries, cfg, held_out=None, **kw):
        seen.update(cfg=cfg, held=held_out, context=context)
        raise ModelLoaded

    monkeypatch.setattr(distill, "compress", fake_compress)
    no_model_base = object()
    import softprompt as sp

    monkeypatch.setattr(sp, "load_base", lambda *a, **kw: no_model_base)
    with pytest.raises(ModelLoaded):
        main(["compress", "--context-text", "Be brief.\\nAlways.", "--held-out", str(held), "--num-held-out", "3",
              "--out", str(tmp_path / "c")])
    assert seen["held"] == ["first held query", "second\nheld query"]
    assert seen["cfg"].held_out == 3 and seen["context"] == "Be brief.\nAlways."


def test_eval_on_a_file_with_its_defaults(model_dir, reviews_csv, capsys):
    """The default --split test of a file is the carved, stratified test split (it was empty before)."""
    rc = main(["eval", "--base", str(model_dir), "--data", str(reviews_csv), "--field", "text=review",
               "--field", "label=sentiment", "--template", "{text}:{label}", "--labels", "good,bad", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.startswith("test: accuracy") and "on 6 examples" in out  # 10% of 60, 3 of each label


def test_train_from_a_config_file_and_a_datasetdict_folder(model_dir, tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    rows = [{"review": f"{i} abc", "sentiment": ["good", "bad"][i % 2]} for i in range(40)]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:30]),
                               "validation": datasets.Dataset.from_list(rows[30:34]),
                               "test": datasets.Dataset.from_list(rows[34:])})
    dd.save_to_disk(str(tmp_path / "dd"))
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"base": str(model_dir), "data": str(tmp_path / "dd"),
                               "field": ["text=review", "label=sentiment"], "template": "{text}:{label}",
                               "labels": "good,bad", "num_virtual_tokens": 2, "steps": 2, "eval_every": 2,
                               "no_progress": True}))
    rc = main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    assert rc == 0
    manifest = json.loads((tmp_path / "run" / "prompt" / "manifest.json").read_text())
    assert manifest["config"]["num_virtual_tokens"] == 2
    assert "test" in capsys.readouterr().out
    from softprompt.training.run import load_data

    data = load_data(str(tmp_path / "dd"), fields={"text": "review", "label": "sentiment"})
    assert len(data.train) == 30 and len(data.validation) == 4 and len(data.test) == 6  # its own splits
