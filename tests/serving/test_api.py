"""The OpenAI-compatible API on a real server: the official client, streaming, classify, health, metrics."""

from __future__ import annotations

import math

import torch

import softprompt as sp
from tests.serving.conftest import METHODS, expected_text


def test_openai_client_completions_every_method(served):
    client = served.openai("acme")
    for m in METHODS:
        r = client.completions.create(model=m, prompt="hello there", max_tokens=10, temperature=0)
        want = expected_text(served.base, served.prompts[("acme", m, 1)], "hello there", 10)
        assert r.choices[0].text == want, m
        assert r.model == f"{m}@1"
        assert r.usage.prompt_tokens == len("hello there")
        assert r.choices[0].finish_reason in ("stop", "length")


def test_plain_model_rows(served):
    r = served.openai("acme").completions.create(model="base", prompt="abc", max_tokens=8, temperature=0)
    assert r.choices[0].text == expected_text(served.base, None, "abc", 8)
    assert r.model == "base"


def test_version_and_alias_addressing(served):
    client = served.openai("acme")
    v1 = expected_text(served.base, served.prompts[("acme", "pt", 1)], "xyz", 8)
    v2 = expected_text(served.base, served.prompts[("acme", "pt", 2)], "xyz", 8)
    assert v1 != v2  # the two versions really differ
    assert client.completions.create(model="pt@1", prompt="xyz", max_tokens=8, temperature=0).choices[0].text == v1
    assert client.completions.create(model="pt@2", prompt="xyz", max_tokens=8, temperature=0).choices[0].text == v2
    latest = client.completions.create(model="pt@latest", prompt="xyz", max_tokens=8, temperature=0)
    assert latest.model == "pt@2" and latest.choices[0].text == v2
    # no prod alias on "pt": the bare name serves the newest version
    assert client.completions.create(model="pt", prompt="xyz", max_tokens=8, temperature=0).model == "pt@2"
    prod = client.completions.create(model="deep_prompt@prod", prompt="xyz", max_tokens=4, temperature=0)
    assert prod.model == "deep_prompt@1"


def test_chat_completions_and_streaming(served):
    client = served.openai("acme")
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    full = client.chat.completions.create(model="deep_prompt", messages=msgs, max_tokens=12, temperature=0)
    text = full.choices[0].message.content
    assert full.choices[0].message.role == "assistant"
    want = expected_text(served.base, served.prompts[("acme", "deep_prompt", 1)],
                         "system: be brief\nuser: hi\nassistant:", 12)
    assert text == want
    chunks = list(client.chat.completions.create(model="deep_prompt", messages=msgs, max_tokens=12, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2  # really incremental
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == \
        [full.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_completion_stream_matches_and_stop_strings(served):
    client = served.openai("acme")
    full = client.completions.create(model="prefix_tuning", prompt="stream me", max_tokens=16, temperature=0)
    text = full.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="prefix_tuning", prompt="stream me", max_tokens=16, temperature=0, stream=True))
    assert streamed == text and len(text) >= 4
    stop = text[2:4]  # a stop string inside the output cuts it before the stop string, streamed or not
    cut = text[:text.find(stop)]
    r = client.completions.create(model="prefix_tuning", prompt="stream me", max_tokens=16, temperature=0, stop=[stop])
    assert r.choices[0].text == cut and r.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="prefix_tuning", prompt="stream me", max_tokens=16, temperature=0, stop=[stop], stream=True))
    assert streamed == cut


def test_curl_style_batch_prompts_and_n(served):
    with served.client("acme") as c:
        r = c.post("/v1/completions", json={"model": "p_tuning", "prompt": ["one", "two"], "n": 2, "max_tokens": 5,
                                            "temperature": 0})
    assert r.status_code == 200
    texts = [ch["text"] for ch in r.json()["choices"]]
    p = served.prompts[("acme", "p_tuning", 1)]
    assert texts == [expected_text(served.base, p, "one", 5)] * 2 + [expected_text(served.base, p, "two", 5)] * 2


def test_sampling_with_seed_is_reproducible(served):
    client = served.openai("acme")
    a = client.completions.create(model="pt", prompt="abc", max_tokens=12, temperature=1.0, seed=7)
    b = client.completions.create(model="pt", prompt="abc", max_tokens=12, temperature=1.0, seed=7)
    assert a.choices[0].text == b.choices[0].text


@torch.no_grad()
def _library_scores(base, prompt, prefix: str, classes: dict) -> dict:
    out = {}
    for label, words in classes.items():
        lps = []
        for w in words:
            pre, word = base.encode([prefix])[0], base.tokenizer(" " + w, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([pre + word])
            logp = torch.log_softmax(sp.forward_mixed(base, [prompt], ids)[0].float(), -1)  # [L,V]
            lps.append(sum(float(logp[len(pre) - 1 + k, t]) for k, t in enumerate(word)))
        out[label] = max(lps) + math.log(sum(math.exp(x - max(lps)) for x in lps))
    return out


def test_classify_matches_library_scoring(served):
    from tests.serving.conftest import VERBALIZER

    with served.client("acme") as c:
        r = c.post("/v1/classify", json={"model": "cls", "input": ["a great film", "dull and bad"]})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    p = served.prompts[("acme", "cls", 1)]
    for row, text in zip(data, ["a great film", "dull and bad"]):
        want = _library_scores(served.base, p, f"Review: {text} Sentiment:", VERBALIZER)
        assert set(row["scores"]) == set(want)
        for k in want:
            assert abs(row["scores"][k] - want[k]) < 1e-3, (k, row["scores"][k], want[k])
        assert row["label"] == max(want, key=want.get)
        assert abs(sum(row["probs"].values()) - 1) < 1e-6


def test_models_health_metrics(served):
    with served.client("acme") as c:
        ids = {m["id"] for m in c.get("/v1/models").json()["data"]}
        assert {"base", "pt", "cls", "deep_prompt@prod"} <= ids
        own = {t["task"] for t in served.state.store.list_tasks("acme")}
        others = {t["task"] for t in served.state.store.list_tasks("globex")} - own
        # only acme's own tasks (test_isolation may give acme a task of globex's name; it is then acme's own)
        assert "secret" in others | own and {i.split("@")[0] for i in ids} - {"base"} <= own and not ids & others
        c.post("/v1/completions", json={"model": "pt", "prompt": "m", "max_tokens": 3, "temperature": 0})
        h = c.get("/health")
        assert h.status_code == 200 and h.json()["status"] == "ok"
        assert h.json()["store"] == "ok" and h.json()["store_generation"] == served.state.store.generation()
        text = c.get("/metrics").text
    for name in ("softprompt_queue_depth", "softprompt_batch_size_bucket", "softprompt_generated_tokens_total",
                 "softprompt_tokens_per_second", "softprompt_batch_seconds_bucket",
                 'softprompt_request_latency_seconds_bucket{endpoint="completions"',
                 "softprompt_prompt_cache_bytes"):
        assert name in text, name
    line = next(ln for ln in text.splitlines() if ln.startswith("softprompt_requests_total{")
                and 'tenant="acme"' in ln and 'task="pt"' in ln and 'status="200"' in ln)
    assert float(line.rsplit(" ", 1)[1]) >= 1


def test_health_says_degraded_while_the_store_is_unreachable_and_loaded_prompts_keep_serving(served, monkeypatch):
    from softprompt.serving.errors import StoreUnavailable

    with served.client("acme") as c:
        assert c.post("/v1/completions", json={"model": "pt", "prompt": "m", "max_tokens": 2,
                                               "temperature": 0}).status_code == 200  # "pt" is now resolved

        def unreachable():
            raise StoreUnavailable("postgresql://user:secret@db/x: connection refused")

        monkeypatch.setattr(served.state.store.backend, "generation", unreachable)
        h = c.get("/health")
        assert h.status_code == 200 and h.json()["status"] == "degraded" and h.json()["store"] == "unavailable"
        assert h.json()["store_error"] == "StoreUnavailable" and "secret" not in h.text  # no URL leaks
        assert c.post("/v1/completions", json={"model": "pt", "prompt": "m", "max_tokens": 2,
                                               "temperature": 0}).status_code == 200
        monkeypatch.undo()
        assert c.get("/health").json()["status"] == "ok"
