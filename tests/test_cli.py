"""The CLI end to end on a tiny model saved as a local Hugging Face directory and a CSV data set."""

from __future__ import annotations

import json

import pytest

from softprompt.cli.main import build_parser, main


def test_help_lists_every_command_and_option_docs(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("train", "eval", "generate", "inspect", "demo"):
        assert cmd in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    # option help is generated from the config field docstrings
    assert "Number of virtual (soft) tokens the prompt adds per request" in out
    assert "Gradient clipping max norm" in out
    assert "(default: None)" not in out


def test_train_eval_inspect_generate(model_dir, reviews_csv, tmp_path, capsys):
    out_dir = tmp_path / "run"
    rc = main(["train", "--base", str(model_dir), "--data", str(reviews_csv), "--field", "text=review",
               "--field", "label=sentiment", "--template", "{text}:{label}", "--labels", "good,bad",
               "--method", "prompt_tuning", "--num-virtual-tokens", "3", "--steps", "6", "--batch-size", "8",
               "--eval-every", "3", "--out", str(out_dir), "--no-progress"])
    assert rc == 0
    prompt = out_dir / "prompt"
    assert sorted(p.name for p in prompt.iterdir()) == ["README.md", "manifest.json", "prompt.safetensors"]
    assert (out_dir / "curves.png").stat().st_size > 1000
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    assert sum(json.loads(x)["kind"] == "train" for x in lines) == 6
    manifest = json.loads((prompt / "manifest.json").read_text())
    assert manifest["extra"]["template"]["source"] == "{text}:{label}"
    assert manifest["config"]["num_virtual_tokens"] == 3

    rc = main(["eval", "--base", str(model_dir), "--prompt", str(prompt), "--data", str(reviews_csv),
               "--field", "text=review", "--field", "label=sentiment", "--split", "train", "--limit", "10"])
    assert rc == 0
    assert "accuracy" in capsys.readouterr().out

    assert main(["inspect", "--base", str(model_dir), str(prompt), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "method prompt_tuning" in out and out.count("nearest:") == 3

    assert main(["generate", "--base", str(model_dir), "--prompt", str(prompt), "abc:", "--max-new-tokens", "2"]) == 0
    assert capsys.readouterr().out.startswith("abc:")


def test_train_hybrid_uses_its_own_template(model_dir, reviews_csv, tmp_path):
    out_dir = tmp_path / "hyb"
    rc = main(["train", "--base", str(model_dir), "--data", str(reviews_csv), "--field", "text=review",
               "--field", "label=sentiment", "--template", "{soft:2}{text}{soft:1|=}:{label}", "--labels", "good,bad",
               "--method", "hybrid", "--steps", "2", "--batch-size", "8", "--out", str(out_dir), "--no-progress"])
    assert rc == 0
    manifest = json.loads((out_dir / "prompt" / "manifest.json").read_text())
    assert manifest["method"] == "hybrid"
    template = "{soft:2}{text}{soft:1|=}:{label}"
    assert manifest["config"]["template"] == manifest["extra"]["template"]["source"] == template
    assert manifest["tensors"]["slots"]["shape"][0] == 3


def test_bad_input_is_a_clear_error_not_a_traceback(model_dir, tmp_path, capsys):
    rc = main(["train", "--base", str(model_dir), "--data", str(tmp_path / "missing.csv"), "--template",
               "{text}:{label}", "--labels", "a,b", "--steps", "1", "--out", str(tmp_path / "r")])
    assert rc == 2
    assert "missing.csv" in capsys.readouterr().err
    rc = main(["train", "--base", str(model_dir), "--data", "rotten_tomatoes", "--num-virtual-tokens", "0",
               "--steps", "1", "--out", str(tmp_path / "r")])
    assert rc == 2
    assert "num_virtual_tokens=0" in capsys.readouterr().err
    rc = main(["generate", "--base", str(tmp_path / "nope"), "hi"])
    assert rc == 2
    assert "never downloaded" in capsys.readouterr().err


def test_parser_builds_without_loading_models():
    p = build_parser()
    args = p.parse_args(["train", "--method", "prefix_tuning", "--reparameterize", "--steps", "2"])
    values = vars(args)
    assert args.method == "prefix_tuning" and values["method.reparameterize"] is True and values["train.steps"] == 2
