"""Every bad input gets a clear 4xx, and the server keeps serving."""

from __future__ import annotations

import io
import pickle

import pytest
import torch

import softprompt as sp
from tests.serving.conftest import make_prompt
from tests.tiny import tiny_base

OK = {"model": "pt", "prompt": "hi", "max_tokens": 3, "temperature": 0}
DEEP = b'{"model": "pt", "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"

BAD_REQUESTS = [
    # (description, path, request kwargs, status, fragment of the message)
    ("unknown task", "/v1/completions", {"json": {**OK, "model": "nope"}}, 404, "not found"),
    ("unknown version", "/v1/completions", {"json": {**OK, "model": "pt@99"}}, 404, "no version 99"),
    ("unknown alias", "/v1/completions", {"json": {**OK, "model": "pt@canary"}}, 404, "no alias"),
    ("missing model", "/v1/completions", {"json": {"prompt": "x"}}, 400, "'model' is required"),
    ("malformed JSON", "/v1/completions", {"content": b'{"model": "pt", '}, 400, "not valid JSON"),
    ("non-UTF-8 body", "/v1/completions", {"content": b'{"model": "\xff\xfe"}'}, 400, "not valid UTF-8"),
    ("JSON not an object", "/v1/completions", {"json": ["pt"]}, 400, "JSON object"),
    ("oversized body", "/v1/completions", {"json": {**OK, "prompt": "x" * (300 << 10)}}, 413, "at most"),
    ("negative max_tokens", "/v1/completions", {"json": {**OK, "max_tokens": -1}}, 400, "max_tokens=-1"),
    ("zero max_tokens", "/v1/completions", {"json": {**OK, "max_tokens": 0}}, 400, "max_tokens=0"),
    ("huge max_tokens", "/v1/completions", {"json": {**OK, "max_tokens": 10**12}}, 400, "limit is 256"),
    ("string max_tokens", "/v1/completions", {"json": {**OK, "max_tokens": "5"}}, 400, "max_tokens='5'"),
    ("bad temperature", "/v1/completions", {"json": {**OK, "temperature": 9}}, 400, "temperature=9"),
    ("empty prompt", "/v1/completions", {"json": {**OK, "prompt": ""}}, 400, "prompt is empty"),
    ("prompt too long", "/v1/completions", {"json": {**OK, "prompt": "x" * 2000}}, 400, "at most 1024"),
    ("too many choices", "/v1/completions", {"json": {**OK, "n": 99}}, 400, "n=99"),
    ("logprobs", "/v1/completions", {"json": {**OK, "logprobs": 5}}, 400, "not supported"),
    ("model with slash", "/v1/completions", {"json": {**OK, "model": "a/b"}}, 400, "invalid"),
    ("model with dots", "/v1/completions", {"json": {**OK, "model": "../../etc/passwd"}}, 400, "invalid"),
    ("model with NUL", "/v1/completions", {"json": {**OK, "model": "pt\u0000x"}}, 400, "invalid"),
    ("bad messages", "/v1/chat/completions", {"json": {"model": "pt", "messages": [{"role": "x"}]}}, 400,
     "messages[0]"),
    ("classify without verbalizer", "/v1/classify", {"json": {"model": "pt", "input": "x"}}, 400, "no verbalizer"),
    ("classify the base model", "/v1/classify", {"json": {"model": "base", "input": "x"}}, 400, "verbalizer"),
    ("task path with slash", "/v1/tasks/a%2Fb/promote", {"json": {}}, 400, "invalid"),
    ("task path with ..", "/v1/tasks/%2E%2E/promote", {"json": {}}, 400, "invalid"),
    ("task path with NUL", "/v1/tasks/a%00b/rollback", {"json": {}}, 400, "invalid"),
    ("promote unknown version", "/v1/tasks/pt/promote", {"json": {"version": 42}}, 404, "no version 42"),
    ("rollback never promoted", "/v1/tasks/pt/rollback", {"json": {}}, 409, "never promoted"),
    ("unknown endpoint", "/v1/engines", {"json": {}}, 404, "no such endpoint"),
    # issue 15: each of these was an HTTP 500
    *[(f"100,000 nested brackets on {path}", path, {"content": DEEP}, 400, "nested deeper than 64")
      for path in ("/v1/completions", "/v1/chat/completions", "/v1/classify", "/v1/tasks/pt/promote",
                   "/v1/tasks/pt/rollback")],
    ("5,000-digit max_tokens", "/v1/completions", {"content": b'{"model": "pt", "prompt": "hi", "max_tokens": '
                                                   + b"9" * 5000 + b"}"}, 400, "5000 digits"),
    ("5,000-digit seed in a list", "/v1/completions", {"content": b'{"model": "pt", "prompt": "hi", "x": [-'
                                                      + b"9" * 5000 + b"]}"}, 400, "digits"),
    ("NaN temperature", "/v1/completions", {"content": b'{"model": "pt", "prompt": "hi", "temperature": NaN}'}, 400,
     "NaN is not JSON"),
    ("1e999 temperature", "/v1/completions", {"content": b'{"model": "pt", "prompt": "hi", "temperature": 1e999}'},
     400, "finite"),
    ("lone surrogate in prompt", "/v1/completions", {"content": b'{"model": "pt", "prompt": "hi \\ud800"}'}, 400,
     "surrogate"),
    ("lone surrogate in chat content", "/v1/chat/completions",
     {"content": b'{"model": "pt", "messages": [{"role": "user", "content": "x\\udfff"}]}'}, 400, "surrogate"),
    ("lone surrogate in a content part", "/v1/chat/completions",
     {"content": b'{"model": "pt", "messages": [{"role": "user", "content": [{"type": "text", "text": "\\ud83d"}]}]}'},
     400, "surrogate"),
    ("lone surrogate in classify input", "/v1/classify", {"content": b'{"model": "cls", "input": ["ok", "\\udc00"]}'},
     400, "surrogate"),
    ("lone surrogate in the model name", "/v1/completions", {"content": b'{"model": "pt\\ud800", "prompt": "x"}'},
     400, "surrogate"),
    ("superscript version", "/v1/completions", {"json": {**OK, "model": "pt@\u00b2"}}, 400, "ASCII digits"),
    ("Arabic-Indic version", "/v1/completions", {"json": {**OK, "model": "pt@\u0663"}}, 400, "ASCII digits"),
    ("5,000-digit version", "/v1/completions", {"json": {**OK, "model": "pt@" + "9" * 5000}}, 400, "out of range"),
    ("version 0", "/v1/completions", {"json": {**OK, "model": "pt@0"}}, 400, "out of range"),
    ("promote a superscript version", "/v1/tasks/pt/promote", {"json": {"version": "\u00b2"}}, 400, "ASCII digits"),
    ("promote a huge version", "/v1/tasks/pt/promote", {"json": {"version": 10**30}}, 400, "out of range"),
    ("promote version true", "/v1/tasks/pt/promote", {"json": {"version": True}}, 400, "version=True"),
    ("promote to a bad alias", "/v1/tasks/pt/promote", {"json": {"version": 1, "alias": "../x"}}, 400, "invalid"),
    ("logit_bias", "/v1/completions", {"json": {**OK, "logit_bias": {"50": -100}}}, 400, "logit_bias"),
    ("presence_penalty", "/v1/completions", {"json": {**OK, "presence_penalty": 0.5}}, 400, "presence_penalty"),
    ("frequency_penalty", "/v1/chat/completions",
     {"json": {"model": "pt", "messages": [{"role": "user", "content": "x"}], "frequency_penalty": 1}}, 400,
     "frequency_penalty"),
    ("json mode", "/v1/chat/completions", {"json": {"model": "pt", "messages": [{"role": "user", "content": "x"}],
                                                    "response_format": {"type": "json_object"}}}, 400,
     "response_format"),
    ("streamed logit_bias", "/v1/completions", {"json": {**OK, "stream": True, "logit_bias": {"1": 5}}}, 400,
     "logit_bias"),
]


@pytest.mark.parametrize("what,path,kw,status,fragment", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request_is_a_clear_4xx(served, what, path, kw, status, fragment):
    with served.client("acme") as c:
        r = c.post(path, **kw)
        assert r.status_code == status, (what, r.text)
        assert fragment in r.json()["error"]["message"], r.text
        after = c.post("/v1/completions", json=OK)  # the server keeps serving
        assert after.status_code == 200


def _upload(c, task, manifest, tensors, names=("manifest.json", "prompt.safetensors")):
    files = {"manifest": (names[0], manifest), "tensors": (names[1], tensors)}
    return c.post(f"/v1/tasks/{task}/versions", files=files)


@pytest.fixture(scope="module")
def good_bytes(served):
    return make_prompt(served.base, "prompt_tuning", seed=5, n=4).to_bytes()


def _with_tensors(manifest: bytes, tensors: dict) -> tuple[bytes, bytes]:
    """A well-formed artifact (digest and declared shapes consistent) holding other tensors."""
    import hashlib
    import json

    from safetensors.torch import save

    blob = save(tensors)
    m = json.loads(manifest)
    m["sha256"] = hashlib.sha256(blob).hexdigest()
    m["tensors"] = {k: {"shape": list(v.shape), "dtype": "float32"} for k, v in tensors.items()}
    return json.dumps(m).encode(), blob


def test_bad_uploads_are_refused(served, good_bytes):
    m, t = good_bytes
    torch_zip = io.BytesIO()
    torch.save({"embeds": torch.zeros(4, 32)}, torch_zip)
    other = sp.attach(tiny_base("llama", seed=1), sp.PromptTuningConfig(num_virtual_tokens=4)).to_bytes()
    corrupted = bytearray(t)
    corrupted[-3] ^= 0xFF
    nan_m, nan_t = _with_tensors(m, {"embeds": torch.full((4, 32), float("nan"))})
    shape_m, shape_t = _with_tensors(m, {"embeds": torch.zeros(5, 32)})
    cases = [
        ("pickle as tensors", _upload, (m, pickle.dumps({"embeds": [0.0] * 8})), 422, "pickle"),
        ("torch.save renamed", _upload, (m, torch_zip.getvalue()), 422, "zip archive"),
        ("text file renamed", _upload, (m, b"just some text, not tensors at all"), 422, "not a safetensors file"),
        ("pickle by file name", lambda c, task, a, b: _upload(c, task, a, b, ("manifest.json", "prompt.pt")),
         (m, t), 400, "prompt.pt"),
        ("artifact for another base", _upload, other, 422, "another base model"),
        ("corrupted tensors", _upload, (m, bytes(corrupted)), 422, "corrupted"),
        ("manifest not JSON", _upload, (b"\x00\x01garbage", t), 422, "not valid UTF-8 JSON"),
        ("NaN values", _upload, (nan_m, nan_t), 422, "NaN"),
        ("wrong shapes", _upload, (shape_m, shape_t), 422, "shapes"),
    ]
    with served.client("acme") as c:
        for what, fn, (a, b), status, fragment in cases:
            r = fn(c, "uploads", a, b)
            assert r.status_code == status, (what, r.text)
            assert fragment in r.json()["error"]["message"], (what, r.text)
        r = c.post("/v1/tasks/uploads/versions", files={"manifest": ("manifest.json", m)})
        assert r.status_code == 400 and "lacks" in r.text
        r = c.post("/v1/tasks/uploads/versions", files={"manifest": ("manifest.json", m), "tensors": ("x", t),
                                                         "script": ("run.py", b"import os")})
        assert r.status_code == 400 and "unexpected upload field" in r.text
        r = c.post("/v1/tasks/uploads/versions", json={"manifest": "x"})
        assert r.status_code == 415
        r = _upload(c, "uploads", m, b"\0" * (2 << 20))
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "body_too_large"
        assert _upload(c, "a%2F..%2Fb", m, t).status_code == 400
        # nothing was stored, and a good upload still works
        assert "uploads" not in {x["task"] for x in c.get("/v1/tasks").json()["data"]}
        r = _upload(c, "uploads", m, t)
        assert r.status_code == 201 and r.json()["version"] == 1
        assert c.post("/v1/completions", json={**OK, "model": "uploads"}).status_code == 200
