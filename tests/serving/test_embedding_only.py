"""--embedding-only: prompt tuning and P-tuning serve; prefix, deep prompt and adapters are refused at push and
at request time, and the model's own code path is never touched (no hooks, no K/V prefix)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from softprompt.serving.engine import Job
from softprompt.serving.errors import Refused
from softprompt.serving.store_sqlite import SqliteStore
from tests.serving.conftest import METHODS, expected_text, make_prompt, start
from tests.tiny import tiny_base

SERVABLE = {"prompt_tuning", "p_tuning"}


def _hooks(base) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in base.model.modules())


def test_embedding_only_mode():
    base = tiny_base("llama")  # its own model: hooks installed by other servers would not count here
    assert _hooks(base) == 0
    with tempfile.TemporaryDirectory() as d:
        s = start(base, Path(d), embedding_only=True)
        try:
            s.add_tenant("t")
            prompts = {m: make_prompt(base, m, seed=50 + i) for i, m in enumerate(METHODS)}
            with s.client("t") as c:
                for m, p in prompts.items():
                    manifest, tensors = p.to_bytes()
                    r = c.post(f"/v1/tasks/{m}/versions", files={"manifest": ("manifest.json", manifest),
                                                                 "tensors": ("prompt.safetensors", tensors)})
                    if m in SERVABLE:
                        assert r.status_code == 201, r.text
                    else:
                        assert r.status_code == 422, (m, r.text)
                        msg = r.json()["error"]["message"]
                        assert "--embedding-only" in msg and m in msg and "input embeddings" in msg
                for m in SERVABLE:
                    r = c.post("/v1/completions", json={"model": m, "prompt": "emb", "max_tokens": 6,
                                                        "temperature": 0})
                    assert r.status_code == 200
                    assert r.json()["choices"][0]["text"] == expected_text(base, prompts[m], "emb", 6)
                # a deep-prompt version that reached the registry another way is refused at request time
                store = SqliteStore(Path(d))
                store.push("t", "sneaky", *prompts["deep_prompt"].to_bytes(), method="deep_prompt")
                r = c.post("/v1/completions", json={"model": "sneaky", "prompt": "x", "max_tokens": 2})
                assert r.status_code == 422 and "--embedding-only" in r.json()["error"]["message"]
                assert c.post("/v1/completions", json={"model": "base", "prompt": "x", "max_tokens": 2}).is_success
            # the engine refuses it too, whatever reaches it
            handle, _ = store.resolve("t", "sneaky")
            future = s.state.engine.submit([Job(handle, base.encode(["x"])[0], 2)])[0]
            with pytest.raises(Refused, match="embedding"):
                future.result(30)
        finally:
            s.running.stop()
    assert _hooks(base) == 0  # no adapter hook, no layer pre-hook was ever installed
    assert not hasattr(base, "_adapter_host")
