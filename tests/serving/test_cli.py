"""softprompt tenant / push / list / promote / rollback, on a store (a directory, a PostgreSQL database) and over
HTTP."""

from __future__ import annotations

import pickle

from softprompt.cli.main import main
from tests.serving.conftest import make_prompt
from tests.tiny import tiny_model, tiny_tokenizer


def _run(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_cli_on_a_store(store_location, tmp_path, tiny, capsys):
    reg = store_location
    code, out = _run(capsys, "tenant", "create", "acme", "--store", reg)
    assert code == 0 and "sp-" in out
    assert _run(capsys, "tenant", "list", "--registry", reg)[1].startswith("acme\t1 key(s)")  # the older name
    prompt = tmp_path / "p"
    make_prompt(tiny, "deep_prompt", seed=3, n=2).save(prompt)
    target = ["--store", reg, "--tenant", "acme"]
    code, out = _run(capsys, "push", "t", str(prompt), *target)
    assert code == 2 and "no base model recorded" in out  # nothing to validate against yet
    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    code, out = _run(capsys, "push", "t", str(prompt), *target, "--base", str(model_dir))
    assert code == 0 and "pushed t@1 (deep_prompt" in out
    code, out = _run(capsys, "push", "t", str(prompt), *target, "--promote")  # the store now knows its base
    assert code == 0 and "pushed t@2" in out and "prod -> 2" in out
    code, out = _run(capsys, "push", "t", str(prompt), *target, "--embedding-only")
    assert code == 2 and "--embedding-only" in out
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_bytes((prompt / "manifest.json").read_bytes())
    (bad / "prompt.safetensors").write_bytes(pickle.dumps({"x": 1}))
    code, out = _run(capsys, "push", "t", str(bad), *target)
    assert code == 2 and "pickle" in out
    assert _run(capsys, "promote", "t", "1", *target)[1].strip() == "t@prod: 2 -> 1"
    assert _run(capsys, "rollback", "t", *target)[1].strip() == "t@prod: 1 -> 2"
    code, out = _run(capsys, "list", *target)
    assert code == 0 and out.startswith("t\tprod->2\tversions 1:deep_prompt, 2:deep_prompt")
    code, out = _run(capsys, "rollback", "nope", *target)
    assert code == 2 and "not found" in out


def test_cli_over_http(served, tmp_path, capsys):
    prompt = tmp_path / "p"
    make_prompt(served.base, "p_tuning", seed=8, n=2).save(prompt)
    target = ["--url", served.url, "--api-key", served.keys["globex"]]
    code, out = _run(capsys, "push", "remote", str(prompt), *target, "--promote")
    assert code == 0 and "pushed remote@1 (p_tuning" in out and "prod -> 1" in out
    assert _run(capsys, "push", "remote", str(prompt), *target)[1].startswith("pushed remote@2")
    assert _run(capsys, "promote", "remote", "2", *target)[1].strip() == "remote@prod: 1 -> 2"
    assert _run(capsys, "rollback", "remote", *target)[1].strip() == "remote@prod: 2 -> 1"
    code, out = _run(capsys, "list", *target)
    assert "remote\tprod->1" in out and "secret" in out and "cls" not in out  # globex's tasks only
    code, out = _run(capsys, "list", "--url", served.url, "--api-key", "sp-wrong")
    assert code == 2 and "HTTP 401" in out
