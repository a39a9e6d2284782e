"""Property-based fuzzing of every input path (issue 15): HTTP bodies for every endpoint, headers, task names,
templates for the template parser, and artifact manifests / safetensors headers.

Properties: every HTTP response is a 2xx, or a 4xx in OpenAI's error shape ({"error": {"message", "type",
"code"}}), never a 5xx; a stream that started never carries an error event; and a good request right after each
example still succeeds. In-process, the template parser either parses or raises ConfigError, and artifact checks
either pass or raise errors the API maps to a 4xx. Examples are fixed and derandomized (the same inputs in every
run, no example database), so a CI failure reproduces locally; the file runs in well under a minute.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from softprompt.api.errors import classify_error  # noqa: E402
from softprompt.api.multipart import parse_form  # noqa: E402
from softprompt.artifacts.io import parse, safetensors_header  # noqa: E402
from softprompt.errors import ConfigError, SoftPromptError  # noqa: E402
from softprompt.serving.validate import check_upload  # noqa: E402
from softprompt.templates import Template  # noqa: E402
from softprompt.templates.parser import parse as parse_template  # noqa: E402
from tests.serving.conftest import TASK_EXTRA, make_prompt, start  # noqa: E402

HTTP_EXAMPLES = 60
"""Per HTTP endpoint test (6 of them); each example is one fuzzed request plus one good request."""
LOCAL_EXAMPLES = 150
"""Per in-process test (templates, multipart, artifacts, PEFT import: 5 of them)."""
COUNTS: dict[str, int] = {}
STATUSES: dict[str, int] = {}


def fuzz_settings(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


# --- strategies ---------------------------------------------------------------------------------------------------

def weighted(*pairs: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """one_of with weights (one_of itself draws its branches about evenly)."""
    index = [i for i, (w, _) in enumerate(pairs) for _ in range(w)]
    return st.sampled_from(index).flatmap(lambda i: pairs[i][1])


SURROGATES = st.sampled_from(["\ud800", "a\udfffb", "\udc00\ud800", "ok \ud83d"])
RAW_LITERALS = (b"9" * 5000, b"-" + b"1" * 4400, b"[" * 3000 + b"]" * 3000, b'{"a":' * 2000 + b"1" + b"}" * 2000,
                b"NaN", b"-Infinity", b"1e999", b"1E400", b'"\\ud800"', b'"x\\udfff"', b"1" * 65, b"0.5" + b"0" * 70)
"""Values json.dumps cannot write: spliced into a drawn body in place of a marker string (see `_send`)."""
RAW = st.integers(0, len(RAW_LITERALS) - 1).map(lambda i: f"\x01raw{i}\x01")
PLAIN = st.text(max_size=24)
TEXT = weighted((6, PLAIN), (1, SURROGATES), (1, st.sampled_from(["", " ", "\x00", "{text}", "}}{{", "é" * 30])))
NUMBERS = st.one_of(st.integers(-5, 300), st.integers(), st.integers(-(10**80), 10**80), st.floats(),
                    st.sampled_from([0, 1, 1e-40, 1e-300, 5e-324, -0.0, 2.0, 2.0000001, 1e308, 2**63, -(2**63) - 1]))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4) | st.dictionaries(TEXT, c, max_size=4),
                    max_leaves=10)
TASK_NAMES = st.one_of(st.sampled_from(["pt", "cls", "dp", "base", "nosuch", "a" * 64, "a" * 65, "..", ".", "a/b",
                                        "a%2Fb", "-x", "x y", "\u00b2", "\u0663", "ｐｔ"]), st.text(max_size=12))
VALID_MODELS = st.sampled_from(["pt", "pt@1", "pt@2", "pt@prod", "pt@latest", "base", "dp", "dp@prod", "dp@1"])
MODELS = weighted(
    (16, VALID_MODELS),
    (2, st.sampled_from(["cls", "cls@1", "nosuch", "pt@0", "pt@99", "pt@\u00b2", "pt@\u0663", "pt@" + "9" * 60,
                     "pt@../x", "pt@", "@1", "../etc/passwd", "a/b", "", "pt\x00", "pt@\ud800", "base@1"])),
    (1, TASK_NAMES), (1, SCALARS))


def _opt(values: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly plausible values; sometimes any JSON, or a value json.dumps cannot write."""
    return weighted((12, values), (1, JSON), (1, RAW))


SAMPLING = {
    "max_tokens": _opt(st.integers(-1, 5)), "max_completion_tokens": _opt(st.integers(0, 5)),
    "temperature": _opt(st.one_of(st.floats(0, 2.1), st.sampled_from([0, 1e-40, 1e-300, 5e-324, 1e-2]))),
    "top_p": _opt(st.one_of(st.floats(0, 1.01), st.sampled_from([1e-300, 5e-324, 1e-7]))),
    "n": _opt(st.integers(0, 5)), "seed": _opt(st.integers(-(2**64), 2**64)), "stream": _opt(st.booleans()),
    "stop": _opt(st.one_of(TEXT, st.lists(TEXT, max_size=5))),
    "stream_options": _opt(st.fixed_dictionaries({"include_usage": st.booleans()})),
    "logprobs": _opt(st.sampled_from([None, False, True, 0, 5])), "echo": _opt(st.booleans()),
    "logit_bias": _opt(st.one_of(st.just({}), st.dictionaries(st.integers(0, 99).map(str), st.integers(-100, 100),
                                                              max_size=2))),
    "presence_penalty": _opt(st.one_of(st.just(0), st.floats(-2, 2))),
    "frequency_penalty": _opt(st.one_of(st.just(0.0), st.floats(-2, 2))),
    "best_of": _opt(st.integers(0, 3)), "suffix": _opt(TEXT), "user": TEXT,
    "tools": _opt(st.lists(JSON, max_size=1)),
    "response_format": _opt(st.sampled_from([{"type": "text"}, {"type": "json_object"}])),
}
PROMPTS = weighted((8, st.text(min_size=1, max_size=30)), (3, st.lists(PLAIN, min_size=1, max_size=4)),
                   (1, st.lists(TEXT, max_size=5)), (1, TEXT), (1, JSON), (1, RAW))
PARTS = st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "text", "image_url", 1]),
                                        "text": _opt(TEXT)}), max_size=3)
MESSAGES = st.one_of(
    st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "user", "system", "assistant", "developer",
                                                             "tool", "x", None]),
                                    "content": weighted((8, PLAIN), (1, TEXT), (2, PARTS), (1, JSON), (1, RAW))}),
             min_size=0, max_size=4), JSON)


VALID_MESSAGES = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"]),
                                                "content": st.text(min_size=1, max_size=20)}), min_size=1, max_size=3)
VALID_PROMPTS = st.one_of(st.text(min_size=1, max_size=30), st.lists(st.text(min_size=1, max_size=10), min_size=1,
                                                                      max_size=3))
HOSTILE = {"model": MODELS, "prompt": PROMPTS, "input": PROMPTS, "messages": MESSAGES}


@st.composite
def body(draw, valid: dict[str, st.SearchStrategy], optional: dict[str, st.SearchStrategy] | None = None
         ) -> dict[str, Any]:
    """A valid request, then up to 4 changes: a field removed, or set to a plausible value, a hostile value for
    that field, any JSON, or a value json.dumps cannot write. Most examples then differ from a good request in
    one or two places, which is where handlers break."""
    optional = optional or {}
    out = {k: draw(v) for k, v in valid.items()}
    keys = sorted({*valid, *optional}) + ["zz"]
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(keys))
        kind = draw(st.integers(0, 6))
        if kind == 0:
            out.pop(key, None)
        elif kind == 1:
            out[key] = draw(JSON)
        elif kind == 2:
            out[key] = draw(RAW)
        elif kind == 3:
            out[key] = draw(HOSTILE.get(key, TEXT))
        else:
            out[key] = draw(optional[key] if key in optional else valid[key] if key in valid else JSON)
    return out


RAW_BODIES = st.one_of(
    st.binary(max_size=64),
    st.sampled_from([b"", b"{", b"[]", b"null", b'"x"', b"{}", b"[" * 5000, b'{"a":' * 3000, b"\xff\xfe",
                     b'{"model": "pt", "prompt": "x"}' + b" " * 10 + b"garbage", b"\xef\xbb\xbf{}"]),
    st.builds(lambda prefix, tail: prefix + tail, st.sampled_from([b'{"model": "pt", "prompt": ', b'{"input": [']),
              st.binary(max_size=24)))
HEADER_TEXT = st.text(st.characters(codec="latin-1", exclude_characters="\r\n\x00\x7f", min_codepoint=0x20),
                      max_size=40).map(lambda s: s.strip().encode("latin-1"))


@st.composite
def headers(draw) -> dict[str, Any]:
    """Authorization (the fuzz tenant's key most of the time) and sometimes odd Content-Type / extra headers."""
    roll = draw(st.integers(0, 9))
    auth = "good" if roll < 8 else None if roll == 8 else draw(HEADER_TEXT)
    out: dict[str, Any] = {}
    if auth == "good":
        out["Authorization"] = f"Bearer {KEY['fuzz']}"
    elif auth is not None:
        out["Authorization"] = (draw(st.sampled_from([b"Bearer ", b"", b"Basic "])) + auth).strip()  # as h11 sends
    if draw(st.booleans()):
        out["Content-Type"] = draw(st.one_of(st.sampled_from(["application/json", "text/plain",
                                                              "multipart/form-data", "multipart/form-data; boundary="]),
                                             HEADER_TEXT))
    if draw(st.integers(0, 4)) == 0:
        out[draw(st.sampled_from(["X-Request-Id", "X-Forwarded-For", "Accept", "Accept-Encoding"]))] = \
            draw(HEADER_TEXT)
    return out


# --- the server ---------------------------------------------------------------------------------------------------

KEY: dict[str, str] = {}
GOOD = {"model": "pt", "prompt": "hello", "max_tokens": 1, "temperature": 0}


@pytest.fixture(scope="module")
def fuzz_server(tiny):
    """Its own registry and small limits, so fuzzed pushes/promotes touch no other test's state and every
    accepted request is cheap (max_tokens <= 4, prompts <= 64 tokens)."""
    with tempfile.TemporaryDirectory() as d:
        s = start(tiny, Path(d), max_tokens_limit=4, default_max_tokens=2, max_prompt_tokens=64,
                  max_prompts_per_request=4, max_batch_size=8, batch_wait_ms=0.0, max_body_bytes=64 << 10,
                  max_upload_bytes=256 << 10)
        try:
            KEY["fuzz"] = s.add_tenant("fuzz")
            s.push("fuzz", "pt", make_prompt(tiny, "prompt_tuning", seed=1, n=4), promote="prod")
            s.push("fuzz", "pt", make_prompt(tiny, "prompt_tuning", seed=2, n=4))
            s.push("fuzz", "cls", make_prompt(tiny, "prompt_tuning", seed=3, n=4), **TASK_EXTRA)
            s.push("fuzz", "dp", make_prompt(tiny, "deep_prompt", seed=4, n=4), promote="prod")
            with httpx.Client(base_url=s.url, timeout=60) as c:
                yield s, c
        finally:
            s.running.stop()
            total = sum(COUNTS.values())
            print(f"\nfuzz: {total} HTTP requests ({COUNTS}); statuses {dict(sorted(STATUSES.items()))}")


def check_response(r: httpx.Response) -> None:
    """The property every response must have."""
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        err = r.json()["error"]
        assert isinstance(err["message"], str) and err["message"], r.text
        assert isinstance(err["type"], str) and "code" in err, r.text
        assert "Traceback" not in r.text
        return
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        events = [ln[len("data: "):] for ln in r.text.splitlines() if ln.startswith("data: ")]
        assert events and events[-1] == "[DONE]", r.text[-300:]
        for e in events[:-1]:
            assert "error" not in json.loads(e), e
    elif r.status_code != 204:
        r.json()


def exchange(fuzz_server, name: str, method: str, path: str, good_after: bool = True, **kw: Any) -> httpx.Response:
    s, c = fuzz_server
    r = c.request(method, path, **kw)
    COUNTS[name] = COUNTS.get(name, 0) + 1
    STATUSES[f"{name} {r.status_code}"] = STATUSES.get(f"{name} {r.status_code}", 0) + 1
    check_response(r)
    if good_after:
        good = c.post("/v1/completions", json=GOOD, headers={"Authorization": f"Bearer {KEY['fuzz']}"})
        assert good.status_code == 200, good.text
    return r


def _send(b: Any) -> dict[str, Any]:
    """A drawn body as request kwargs: raw bytes, or JSON (NaN written as NaN) with RAW markers spliced in."""
    if isinstance(b, bytes):
        return {"content": b}
    data = json.dumps(b).encode()
    for i, literal in enumerate(RAW_LITERALS):
        data = data.replace(f'"\\u0001raw{i}\\u0001"'.encode(), literal)
    return {"content": data}


def _task_path(name: Any) -> str:
    return urllib.parse.quote(str(name), safe="")


@fuzz_settings(HTTP_EXAMPLES)
@given(b=weighted((8, body({"model": VALID_MODELS, "prompt": VALID_PROMPTS}, SAMPLING)), (1, RAW_BODIES), (1, JSON)),
       h=headers())
def test_fuzz_completions(fuzz_server, b, h):
    exchange(fuzz_server, "completions", "POST", "/v1/completions", headers=h, **_send(b))


@fuzz_settings(HTTP_EXAMPLES)
@given(b=weighted((8, body({"model": VALID_MODELS, "messages": VALID_MESSAGES}, SAMPLING)), (1, RAW_BODIES)),
       h=headers())
def test_fuzz_chat_completions(fuzz_server, b, h):
    exchange(fuzz_server, "chat", "POST", "/v1/chat/completions", headers=h, **_send(b))


@fuzz_settings(HTTP_EXAMPLES)
@given(b=weighted((8, body({"model": st.sampled_from(["cls", "cls@1", "cls@latest"]), "input": VALID_PROMPTS})),
                  (1, RAW_BODIES)), h=headers())
def test_fuzz_classify(fuzz_server, b, h):
    exchange(fuzz_server, "classify", "POST", "/v1/classify", headers=h, **_send(b))


@fuzz_settings(HTTP_EXAMPLES)
@given(task=weighted((3, st.sampled_from(["pt", "dp"])), (1, TASK_NAMES)),
       op=st.sampled_from(["promote", "rollback", "versions", "", "delete"]),
       b=weighted((6, body({}, {"version": weighted((4, st.integers(-1, 4)), (1, MODELS), (1, SCALARS)),
                                "alias": weighted((4, st.sampled_from(["prod", "canary", "latest", "7", "../x", ""])),
                                                  (1, TASK_NAMES), (1, SCALARS))})), (1, RAW_BODIES)),
       h=headers())
def test_fuzz_task_management(fuzz_server, task, op, b, h):
    method, suffix = {"promote": ("POST", "/promote"), "rollback": ("POST", "/rollback"),
                      "versions": ("GET", "/versions"), "": ("GET", ""), "delete": ("DELETE", "")}[op]
    exchange(fuzz_server, "tasks", method, f"/v1/tasks/{_task_path(task)}{suffix}", headers=h, **_send(b))
    exchange(fuzz_server, "tasks", "GET", "/v1/tasks", good_after=False, headers=h)
    exchange(fuzz_server, "models", "GET", "/v1/models", good_after=False, headers=h)


# --- artifacts ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_artifact(tiny) -> tuple[bytes, bytes]:
    return make_prompt(tiny, "prompt_tuning", seed=9, n=4).to_bytes(**TASK_EXTRA)


DTYPES = st.one_of(st.sampled_from(["F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "x"]), SCALARS)
SHAPES = st.one_of(st.lists(st.integers(-2, 40), max_size=3), st.lists(st.integers(), max_size=2), JSON)


@st.composite
def safetensors_blobs(draw, good: bytes) -> bytes:
    """A safetensors file: the good one, or one with a fuzzed header (entries, offsets, metadata, length)."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return good
    if kind == 1:
        return draw(st.one_of(st.binary(max_size=64), st.just(good[: draw(st.integers(0, len(good)))])))
    entries = {draw(st.sampled_from(["embeds", "x", "__metadata__", ""])): {
        "dtype": draw(DTYPES), "shape": draw(SHAPES),
        "data_offsets": draw(st.one_of(st.lists(st.integers(-4, 600), min_size=2, max_size=2), JSON))}
        for _ in range(draw(st.integers(0, 2)))}
    if draw(st.booleans()):
        entries = draw(st.one_of(JSON, st.just(entries)))
    header = draw(st.one_of(st.just(json.dumps(entries).encode()), st.sampled_from([b"{" * 500, b"[" * 2000])))
    n = draw(st.one_of(st.just(len(header)), st.integers(0, 2**64 - 1)))
    return n.to_bytes(8, "little") + header + draw(st.binary(max_size=600))


@st.composite
def manifests(draw, good: bytes, blob: bytes) -> bytes:
    """The good manifest with a few fields replaced, removed or nested oddly; its digest usually matches."""
    m = json.loads(good)
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["", "config", "tensors", "base", "extra"]))
        target = m if where == "" or not isinstance(m.get(where), dict) else m[where]
        keys = sorted(target) + ["new"]
        key = draw(st.sampled_from(keys))
        if draw(st.integers(0, 3)) == 0:
            target.pop(key, None)
        else:
            target[key] = draw(JSON)
    if draw(st.integers(0, 4)) > 0:
        m["sha256"] = hashlib.sha256(blob).hexdigest()
    raw = json.dumps(m).encode()
    return draw(st.one_of(st.just(raw), st.just(raw), st.just(raw[:-1] + b', "z": ' + b"[" * 3000 + b"]" * 3000
                                                              + b"}"), st.binary(max_size=32)))


def _upload_cases(good_artifact):
    m, t = good_artifact
    return st.shared(st.just(None)).flatmap(lambda _: safetensors_blobs(t)).flatmap(
        lambda blob: st.tuples(manifests(m, blob), st.just(blob)))


def _maps_to_4xx(e: BaseException) -> None:
    assert isinstance(e, SoftPromptError), repr(e)
    status = classify_error(e)[0]
    assert 400 <= status < 500, (status, e)


def test_fuzz_artifacts_in_process(tiny, good_artifact):
    @fuzz_settings(LOCAL_EXAMPLES)
    @given(case=_upload_cases(good_artifact))
    def run(case):
        m, t = case
        for check in (lambda: check_upload(m, t, base=tiny), lambda: check_upload(m, t, fingerprint=tiny.fingerprint),
                      lambda: parse(m, t, tiny.fingerprint), lambda: safetensors_header(t)):
            try:
                check()
            except Exception as e:  # noqa: BLE001 - the property is about which exceptions
                _maps_to_4xx(e)

    run()


def test_fuzz_uploads_over_http(fuzz_server, good_artifact):
    @fuzz_settings(HTTP_EXAMPLES)
    @given(case=_upload_cases(good_artifact), task=st.one_of(st.just("up"), TASK_NAMES),
           promote=st.one_of(st.none(), st.sampled_from(["prod", "../bad", "latest", ""]), TEXT),
           names=st.tuples(st.sampled_from(["manifest.json", "m.pkl", "", "a/../b.json"]),
                           st.sampled_from(["prompt.safetensors", "prompt.pt", "x"])),
           h=headers())
    def run(case, task, promote, names, h):
        m, t = case
        h = {k: v for k, v in h.items() if k != "Content-Type"}  # httpx writes the multipart boundary
        params = {"promote": promote} if promote is not None else None
        try:
            params and urllib.parse.urlencode(params)
        except UnicodeEncodeError:
            params = None
        exchange(fuzz_server, "push", "POST", f"/v1/tasks/{_task_path(task)}/versions", headers=h, params=params,
                 files={"manifest": (names[0], m), "tensors": (names[1], t)})

    run()


@st.composite
def adapter_configs(draw) -> bytes:
    """A PEFT adapter_config.json: a plausible one with fields changed, or any bytes."""
    cfg = {"peft_type": draw(weighted((4, st.sampled_from(["PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING"])),
                                      (1, SCALARS))),
           "num_virtual_tokens": draw(weighted((4, st.integers(-1, 6)), (1, JSON))),
           "token_dim": draw(weighted((3, st.just(32)), (1, NUMBERS))), "num_layers": draw(st.integers(0, 3)),
           "task_type": "CAUSAL_LM"}
    for _ in range(draw(st.integers(0, 2))):
        cfg[draw(st.sampled_from(sorted(cfg) + ["x"]))] = draw(JSON)
    data = json.dumps(cfg).encode()
    for i, literal in enumerate(RAW_LITERALS):
        data = data.replace(f'"\\u0001raw{i}\\u0001"'.encode(), literal)
    return draw(weighted((6, st.just(data)), (1, st.binary(max_size=40))))


def test_fuzz_peft_import(tiny, tmp_path):
    """`softprompt import` reads adapter_config.json and adapter_model.safetensors: ArtifactError, never another."""
    from safetensors.torch import save

    from softprompt.interop import import_peft

    blobs = [save({"prompt_embeddings": torch.zeros(4, 32)}), save({"prompt_embeddings": torch.zeros(3, 7)}),
             b"\x80\x04K\x01.", save({"x": torch.zeros(2)})]
    counter = iter(range(10**6))

    @fuzz_settings(LOCAL_EXAMPLES)
    @given(cfg=adapter_configs(), blob=st.sampled_from(blobs))
    def run(cfg, blob):
        d = tmp_path / str(next(counter))
        d.mkdir()
        (d / "adapter_config.json").write_bytes(cfg)
        (d / "adapter_model.safetensors").write_bytes(blob)
        try:
            import_peft(d, tiny)
        except Exception as e:  # noqa: BLE001
            _maps_to_4xx(e)

    run()


MULTIPART_TYPES = st.one_of(st.sampled_from(["multipart/form-data; boundary=XyZ", "multipart/form-data",
                                             "multipart/form-data; boundary=\"\"", "text/plain",
                                             "multipart/form-data; boundary=" + "a" * 300,
                                             "multipart/form-data; boundary*=utf-8''%E2%82%AC"]),
                            st.text(max_size=40).map(lambda s: "multipart/form-data; " + s))


def test_fuzz_multipart_parser():
    part = st.builds(lambda n, f, b: b'\r\nContent-Disposition: form-data; name="' + n + b'"' + f + b"\r\n\r\n" + b,
                     st.sampled_from([b"manifest", b"tensors", b"x", b"", b'"']),
                     st.sampled_from([b"", b'; filename="a.json"', b"; filename=", b'; filename="\xff"']),
                     st.binary(max_size=16))
    bodies = st.one_of(st.binary(max_size=80),
                       st.lists(part, max_size=3).map(lambda ps: b"--XyZ" + b"\r\n--XyZ".join(ps) + b"\r\n--XyZ--"))

    @fuzz_settings(LOCAL_EXAMPLES)
    @given(b=bodies, ctype=MULTIPART_TYPES)
    def run(b, ctype):
        try:
            parse_form(b, ctype, ("manifest", "tensors"))
        except Exception as e:  # noqa: BLE001
            _maps_to_4xx(e)

    run()


# --- templates ------------------------------------------------------------------------------------------------------

PIECES = st.sampled_from(["{", "}", "{{", "}}", "soft", ":", "|", "text", "label", "{soft:", "{soft:4}", "{text}",
                          "{label}", "{soft:2:a}", "{soft:a}", "{soft:0}", "{soft:99999}", "{soft:²}", "{soft:٣}",
                          "{soft:4|init}", "{soft:4|}", " ", "\n", "\t", "x", "é", "\x00", "9" * 30])
TEMPLATES = st.one_of(st.text(max_size=40), st.lists(PIECES, max_size=14).map("".join),
                      st.lists(st.one_of(PIECES, st.text(max_size=3)), max_size=10).map("".join), SCALARS)


@fuzz_settings(LOCAL_EXAMPLES)
@given(source=TEMPLATES, answer=st.one_of(st.just("label"), st.sampled_from(["soft", "", "x y", "a"]), SCALARS))
def test_fuzz_template_parser(source, answer):
    """parse either succeeds or raises ConfigError (the project's error for templates), never anything else."""
    for fn in (lambda: parse_template(source, answer), lambda: Template.parse(source, answer_field=answer)):
        try:
            fn()
        except ConfigError:
            pass


def test_fuzz_template_parser_is_fast_on_long_inputs():
    """A 64 KiB template of problems is reported in bounded time (the server caps templates at 4,096 chars)."""
    t0 = time.perf_counter()
    with pytest.raises(ConfigError):
        parse_template("{}" * 32768)
    with pytest.raises(ConfigError):
        parse_template("{soft:1}" * 8192 + "}")
    assert time.perf_counter() - t0 < 30


def test_fuzz_examples_ran():
    """The HTTP fuzz tests above really sent their requests (the counts are also printed with -s)."""
    if not COUNTS:
        pytest.skip("run with the HTTP fuzz tests")
    assert all(v >= HTTP_EXAMPLES for v in COUNTS.values()), COUNTS
