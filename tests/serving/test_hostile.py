"""Issue 15, as a hostile client tried it: no 500s, no metrics abuse, no half-applied requests (one test per defect;
the request-body cases are in test_bad_input.py's BAD_REQUESTS)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

import softprompt as sp
from softprompt.api.app import create_app
from softprompt.api.state import build_state
from softprompt.cli.main import main
from softprompt.errors import ArtifactError, ConfigError, InputError
from softprompt.interop import import_peft
from softprompt.serving.admin import LocalTasks
from softprompt.serving.config import ServeConfig
from tests.serving.conftest import make_prompt, start

OK = {"model": "pt", "prompt": "hi", "max_tokens": 3, "temperature": 0}
DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture(scope="module")
def good_bytes(served):
    return make_prompt(served.base, "prompt_tuning", seed=6, n=4).to_bytes()


def _deep_manifest(manifest: bytes) -> bytes:
    """The manifest with 100,000 nested brackets added (json.dumps itself cannot write that)."""
    body = manifest.rstrip()
    assert body.endswith(b"}")
    return body[:-1] + b', "deep": ' + DEEP + b"}"


def _events(r: httpx.Response) -> list[str]:
    return [ln[len("data: "):] for ln in r.text.splitlines() if ln.startswith("data: ")]


# --- 1. sampling parameters that overflowed to NaN -----------------------------------------------------------------

@pytest.mark.parametrize("temperature", [1e-40, 1e-300, 5e-324])
def test_tiny_temperature_samples_at_the_documented_minimum(served, temperature):
    req = {"model": "pt", "prompt": "hi", "max_tokens": 4, "seed": 7}
    with served.client("acme") as c:
        r = c.post("/v1/completions", json={**req, "temperature": temperature})
        assert r.status_code == 200, r.text
        at_min = c.post("/v1/completions", json={**req, "temperature": 0.01}).json()["choices"][0]["text"]
        assert r.json()["choices"][0]["text"] == at_min  # (0, 0.01) samples at 0.01, as vLLM does
        s = c.post("/v1/completions", json={**req, "temperature": temperature, "stream": True})
    assert s.status_code == 200
    events = _events(s)
    assert events[-1] == "[DONE]" and not any("error" in json.loads(e) for e in events[:-1]), s.text
    assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == at_min


def test_tiny_top_p_keeps_the_most_likely_token(served):
    with served.client("acme") as c:
        greedy = c.post("/v1/completions", json={**OK, "max_tokens": 4}).json()["choices"][0]["text"]
        for stream in (False, True):
            r = c.post("/v1/completions", json={**OK, "max_tokens": 4, "temperature": 1.0, "top_p": 1e-300,
                                                "seed": 3, "stream": stream})
            assert r.status_code == 200, r.text
            if stream:
                events = _events(r)
                assert events[-1] == "[DONE]" and not any("error" in json.loads(e) for e in events[:-1])
                text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
            else:
                text = r.json()["choices"][0]["text"]
            assert text == greedy


def test_no_op_defaults_of_unsupported_fields_are_accepted(served):
    """What the openai client may send by default is not refused: penalties 0, empty logit_bias, logprobs false."""
    defaults = {"presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {}, "logprobs": False,
                "tool_choice": "none", "response_format": {"type": "text"}}
    with served.client("acme") as c:
        r = c.post("/v1/chat/completions", json={"model": "pt", "messages": [{"role": "user", "content": "x"}],
                                                 "max_tokens": 2, **defaults})
        assert r.status_code == 200, r.text
        assert c.post("/v1/completions", json={**OK, "logprobs": True}).status_code == 400


# --- 1. uploads and files with nested JSON ----------------------------------------------------------------------

def test_deeply_nested_manifest_upload_is_a_422(served, good_bytes):
    m, t = good_bytes
    with served.client("acme") as c:
        r = c.post("/v1/tasks/deep/versions", files={"manifest": ("manifest.json", _deep_manifest(m)),
                                                      "tensors": ("prompt.safetensors", t)})
        assert r.status_code == 422 and "nested deeper than 64" in r.json()["error"]["message"], r.text
        assert "deep" not in {x["task"] for x in c.get("/v1/tasks").json()["data"]}


def test_deeply_nested_safetensors_header_is_a_422(served, good_bytes):
    header = b'{"a": ' + DEEP + b"}"
    blob = len(header).to_bytes(8, "little") + header
    m = json.loads(good_bytes[0])
    m["sha256"] = hashlib.sha256(blob).hexdigest()
    with served.client("acme") as c:
        r = c.post("/v1/tasks/deep/versions", files={"manifest": ("manifest.json", json.dumps(m).encode()),
                                                      "tensors": ("prompt.safetensors", blob)})
    assert r.status_code == 422 and "nested deeper" in r.json()["error"]["message"], r.text


def test_cli_push_of_a_nested_manifest_is_an_error_not_a_traceback(served, tmp_path, capsys, good_bytes):
    reg = tmp_path / "reg"
    LocalTasks(reg, "t").store.bind_base(served.base.fingerprint)
    LocalTasks(reg, "t").store.create_tenant("t")
    d = tmp_path / "p"
    d.mkdir()
    (d / "manifest.json").write_bytes(_deep_manifest(good_bytes[0]))
    (d / "prompt.safetensors").write_bytes(good_bytes[1])
    code = main(["push", "x", str(d), "--registry", str(reg), "--tenant", "t"])
    out = capsys.readouterr()
    assert code == 2 and "nested deeper than 64" in out.err + out.out


def test_import_of_a_nested_adapter_config_is_an_artifact_error(served, tmp_path):
    d = tmp_path / "peft"
    d.mkdir()
    (d / "adapter_config.json").write_bytes(b'{"peft_type": "PROMPT_TUNING", "x": ' + DEEP + b"}")
    (d / "adapter_model.safetensors").write_bytes(good_safetensors())
    with pytest.raises(ArtifactError, match="nested deeper than 64"):
        import_peft(d, served.base)


def good_safetensors() -> bytes:
    import torch
    from safetensors.torch import save

    return save({"prompt_embeddings": torch.zeros(4, 32)})


# --- 1. the catch-all ---------------------------------------------------------------------------------------------

def test_an_unexpected_error_is_a_logged_500_with_a_request_id(served, monkeypatch, caplog):
    def boom(*a, **kw):
        raise RuntimeError("boom: secret internals")

    monkeypatch.setattr(served.state.runner, "encode", boom)
    monkeypatch.setattr(served.state.store, "list_tasks", boom)
    with served.client("acme") as c:
        for method, path, kw in (("POST", "/v1/completions", {"json": OK}), ("GET", "/v1/tasks", {})):
            r = c.request(method, path, **kw)
            assert r.status_code == 500, r.text
            err = r.json()["error"]
            rid = r.headers["x-request-id"]
            assert err["type"] == "server_error" and err["code"] == "internal_error" and rid in err["message"]
            assert "boom" not in r.text and "Traceback" not in r.text
        monkeypatch.undo()
        ok = c.post("/v1/completions", json=OK)
        assert ok.status_code == 200 and ok.headers["x-request-id"].startswith("req-")


# --- 2. /metrics --------------------------------------------------------------------------------------------------

def test_unknown_task_names_never_become_metric_labels(served):
    with served.client("acme") as c:
        for i in range(10):
            assert c.post("/v1/completions", json={**OK, "model": f"nosuch{i}"}).status_code == 404
            assert c.post("/v1/completions", json={**OK, "model": f"pt@nosuch{i}"}).status_code == 404
            assert c.post(f"/v1/tasks/nosuch{i}/promote", json={}).status_code == 404
            assert c.post(f"/v1/tasks/nosuch{i}/rollback", json={}).status_code == 404
        assert c.post("/v1/completions", json=OK).status_code == 200
        text = c.get("/metrics").text
    assert "nosuch" not in text
    assert any('task="pt"' in ln and 'tenant="acme"' in ln for ln in text.splitlines())


def _get_metrics(state, client_host: str, headers: dict | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(create_app(state), client=(client_host, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://sp") as c:
            return await c.get("/metrics", headers=headers or {})

    return asyncio.run(go())


def test_metrics_access_modes(tiny, tmp_path, monkeypatch):
    def state(mode: str):
        return build_state(tiny, tmp_path / mode, ServeConfig(metrics_access=mode))

    local = state("local")  # the default
    assert ServeConfig().metrics_access == "local"
    assert _get_metrics(local, "127.0.0.1").status_code == 200
    assert _get_metrics(local, "::1").status_code == 200
    r = _get_metrics(local, "10.1.2.3")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert _get_metrics(state("off"), "127.0.0.1").status_code == 404
    assert _get_metrics(state("open"), "10.1.2.3").status_code == 200
    monkeypatch.delenv("SOFTPROMPT_METRICS_KEY", raising=False)
    with pytest.raises(ConfigError, match="SOFTPROMPT_METRICS_KEY"):  # refused before any model is loaded
        ServeConfig(metrics_access="key")
    monkeypatch.setenv("SOFTPROMPT_METRICS_KEY", "short")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        ServeConfig(metrics_access="key")
    key = "m-" + "k" * 30
    monkeypatch.setenv("SOFTPROMPT_METRICS_KEY", key)
    keyed = state("key")
    tenant_key = keyed.store.create_tenant("acme")
    assert _get_metrics(keyed, "127.0.0.1").status_code == 401
    assert _get_metrics(keyed, "10.1.2.3", {"Authorization": f"Bearer {tenant_key}"}).status_code == 401
    assert _get_metrics(keyed, "10.1.2.3", {"Authorization": f"Bearer {key}"}).status_code == 200
    with pytest.raises(ConfigError, match="metrics_access"):
        ServeConfig(metrics_access="public")


# --- 3. a push with ?promote= happens whole or not at all --------------------------------------------------------

def test_push_with_a_bad_promote_alias_keeps_nothing(served, good_bytes):
    m, t = good_bytes
    files = {"manifest": ("manifest.json", m), "tensors": ("prompt.safetensors", t)}
    with served.client("acme") as c:
        for alias in ("../bad", "latest", "7", "a b"):
            r = c.post("/v1/tasks/atomic/versions", params={"promote": alias}, files=files)
            assert r.status_code == 400 and "alias name" in r.json()["error"]["message"], (alias, r.text)
        r = c.post("/v1/tasks/atomic/versions?promote=a&promote=b", files=files)
        assert r.status_code == 400
        assert "atomic" not in {x["task"] for x in c.get("/v1/tasks").json()["data"]}
        r = c.post("/v1/tasks/atomic/versions", params={"promote": "canary"}, files=files)
        assert r.status_code == 201 and r.json()["version"] == 1 and r.json()["promoted"]["alias"] == "canary"
    local = LocalTasks(served.state.store, "acme", base=served.base)
    with pytest.raises(InputError, match="alias name"):
        local.push("atomic2", m, t, promote="../bad")
    assert "atomic2" not in {x["task"] for x in local.list()}


# --- 4. a request that can never fit the queue -------------------------------------------------------------------

def test_contradictory_queue_limits_are_refused_at_start():
    with pytest.raises(ConfigError, match="max_prompts_per_request=16 is more than max_queue=8"):
        ServeConfig(max_queue=8)
    assert ServeConfig(max_queue=8, max_prompts_per_request=8).max_queue == 8


def test_a_request_larger_than_the_queue_is_a_400_naming_the_limit(tiny):
    with tempfile.TemporaryDirectory() as d:
        s = start(tiny, Path(d), max_queue=8, max_prompts_per_request=8)
        try:
            s.add_tenant("t")
            with s.client("t") as c:
                req = {"model": "base", "prompt": ["a", "b", "c"], "max_tokens": 1, "n": 3}
                r = c.post("/v1/completions", json=req)
                assert r.status_code == 400 and "at most 8" in r.json()["error"]["message"], r.text
                r = c.post("/v1/completions", json={**req, "prompt": "a", "n": 9})
                assert r.status_code == 400 and "n=9" in r.json()["error"]["message"], r.text
                assert c.post("/v1/completions", json={**req, "n": 2}).status_code == 200
        finally:
            s.running.stop()


# --- 5. softprompt push applies load_prompt's directory rules -----------------------------------------------------

def _push_unreachable(capsys, d: Path) -> str:
    """`softprompt push` to a server that does not exist: it only gets that far if it read the directory."""
    code = main(["push", "t", str(d), "--url", "http://127.0.0.1:9", "--api-key", "sp-x"])
    out = capsys.readouterr()
    assert code == 2
    return out.err + out.out


def test_push_refuses_extra_files_and_symlinks_before_reading(served, tmp_path, capsys):
    d = tmp_path / "p"
    make_prompt(served.base, "prompt_tuning", seed=2, n=2).save(d)
    assert "cannot reach" in _push_unreachable(capsys, d)  # a clean directory is read and sent
    (d / "evil.pkl").write_bytes(b"\x80\x04K\x01.")
    (d / "run.sh").write_text("#!/bin/sh\n")
    out = _push_unreachable(capsys, d)
    assert "evil.pkl" in out and "run.sh" in out and "cannot reach" not in out
    (d / "evil.pkl").unlink()
    (d / "run.sh").unlink()
    real = tmp_path / "elsewhere.safetensors"
    shutil.move(d / "prompt.safetensors", real)
    os.symlink(real, d / "prompt.safetensors")
    out = _push_unreachable(capsys, d)
    assert "symbolic link" in out and "cannot reach" not in out
    with pytest.raises(ArtifactError, match="symbolic link"):  # the same rule as load_prompt
        sp.load_prompt(d, served.base)
    (d / "prompt.safetensors").unlink()
    os.symlink("/etc/hostname" if os.path.exists("/etc/hostname") else "/dev/null", d / "prompt.safetensors")
    assert "symbolic link" in _push_unreachable(capsys, d)


def test_a_huge_manifest_template_is_refused_before_it_is_parsed():
    from softprompt.serving.validate import MAX_TEMPLATE_CHARS, check_extra

    source = "{}" * (MAX_TEMPLATE_CHARS // 2 + 1)
    with pytest.raises(ArtifactError, match=f"longer than {MAX_TEMPLATE_CHARS} characters"):
        check_extra({"template": {"format": "softprompt.template/1", "source": source}, "verbalizer": None})


def test_a_content_length_of_5000_digits_is_a_413_not_a_500():
    from softprompt.api.middleware import BodyLimit

    sent: list[dict] = []

    async def app(scope, receive, send):  # never reached
        raise AssertionError("the body limit let it through")

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "path": "/v1/completions", "headers": [(b"content-length", b"9" * 5000)]}
    asyncio.run(BodyLimit(app, max_body=1024, max_upload=4096)(scope, receive, send))
    assert sent[0]["status"] == 413


@pytest.mark.parametrize("max_length", [-5, 0, True, 1.5, "9", 10**12])
def test_a_manifest_max_length_out_of_range_is_refused(max_length):
    from softprompt.serving.validate import check_extra
    from tests.serving.conftest import TASK_EXTRA

    with pytest.raises(ArtifactError, match="max_length"):
        check_extra({**TASK_EXTRA, "max_length": max_length})
    assert check_extra(dict(TASK_EXTRA)) == TASK_EXTRA


def test_a_failure_after_a_stream_started_is_an_error_event_with_the_request_id(served, monkeypatch):
    """Validation runs before the stream starts (test_bad_input: 'streamed logit_bias' is a 400); a model failure
    after the 200 can only be an event, and it names the completion id the log uses, never the exception text."""
    def boom(*a, **kw):
        raise RuntimeError("boom: secret internals")

    monkeypatch.setattr(served.state.runner, "generate", boom)
    with served.client("acme") as c:
        r = c.post("/v1/completions", json={**OK, "stream": True})
        monkeypatch.undo()
        assert c.post("/v1/completions", json=OK).status_code == 200
    assert r.status_code == 200
    events = [json.loads(e) for e in _events(r) if e != "[DONE]"]
    err = next(e["error"] for e in events if "error" in e)
    assert err["code"] == "internal_error" and "request id cmpl-" in err["message"] and "boom" not in r.text
