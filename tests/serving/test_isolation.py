"""Tenant isolation: a tenant's key reaches only its own namespace; keys are stored hashed."""

from __future__ import annotations

import sqlite3

from tests.serving.conftest import expected_text, make_prompt


def _gen(c, model, text="iso", n=6):
    return c.post("/v1/completions", json={"model": model, "prompt": text, "max_tokens": n, "temperature": 0})


def test_listing_shows_only_own_tasks(served):
    with served.client("acme") as a, served.client("globex") as b:
        a_tasks = {t["task"] for t in a.get("/v1/tasks").json()["data"]}
        b_tasks = {t["task"] for t in b.get("/v1/tasks").json()["data"]}
    assert "secret" in b_tasks and "secret" not in a_tasks
    assert "cls" in a_tasks and "cls" not in b_tasks


def test_cannot_use_other_tenants_task(served):
    with served.client("acme") as a:
        for model in ("secret", "secret@1", "secret@prod"):
            r = _gen(a, model)
            assert r.status_code == 404, r.text
            assert "globex" not in r.text  # nothing reveals the other tenant
        r = a.post("/v1/classify", json={"model": "secret", "input": "x"})
        assert r.status_code == 404


def test_same_task_name_is_per_tenant(served):
    with served.client("acme") as a, served.client("globex") as b:
        ra, rb = _gen(a, "pt@1"), _gen(b, "pt@1")
    assert ra.json()["choices"][0]["text"] == expected_text(served.base, served.prompts[("acme", "pt", 1)], "iso", 6)
    assert rb.json()["choices"][0]["text"] == expected_text(served.base, served.prompts[("globex", "pt", 1)], "iso", 6)


def test_cannot_overwrite_promote_or_rollback_other_tenants_task(served):
    before = served.state.store.list_tasks("globex")
    with served.client("globex") as b:
        b_text = _gen(b, "secret").json()["choices"][0]["text"]
    with served.client("acme") as a:
        # promote / rollback of globex's task: it does not exist in acme's namespace
        assert a.post("/v1/tasks/secret/promote", json={"version": 1}).status_code == 404
        assert a.post("/v1/tasks/secret/rollback", json={}).status_code == 404
        # a push under the same name creates acme's own task, leaving globex's untouched
        m, t = make_prompt(served.base, "prompt_tuning", seed=99).to_bytes()
        r = a.post("/v1/tasks/secret/versions", files={"manifest": ("manifest.json", m),
                                                        "tensors": ("prompt.safetensors", t)})
        assert r.status_code == 201 and r.json()["version"] == 1
    assert served.state.store.list_tasks("globex") == before
    with served.client("globex") as b:
        assert _gen(b, "secret").json()["choices"][0]["text"] == b_text


def test_keys_required_and_hashed(served):
    with served.client() as anon:
        r = anon.post("/v1/completions", json={"model": "pt", "prompt": "x"})
        assert r.status_code == 401 and "API key" in r.json()["error"]["message"]
        assert anon.get("/v1/tasks").status_code == 401
        bad = anon.get("/v1/tasks", headers={"Authorization": "Bearer sp-not-a-key"})
        assert bad.status_code == 401
        assert anon.get("/v1/tasks", headers={"Authorization": f"Basic {served.keys['acme']}"}).status_code == 401
    raw = (served.state.store.backend.root / "registry.db").read_bytes()
    wal = served.state.store.backend.root / "registry.db-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    for key in served.keys.values():
        assert key.encode() not in raw  # only sha256 hashes are stored
    db = sqlite3.connect(served.state.store.backend.root / "registry.db")
    assert all(len(h) == 64 for (h,) in db.execute("SELECT key_hash FROM api_keys"))


def test_revoked_key_stops_working(served):
    key = served.add_tenant("revokee")
    with served.client("revokee") as c:
        assert c.get("/v1/tasks").status_code == 200
        served.state.store.revoke_keys("revokee")
        assert c.get("/v1/tasks").status_code == 401
    assert key
