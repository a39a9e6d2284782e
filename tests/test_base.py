"""Loading a frozen base: everything frozen, facts read off the model, fingerprints, no downloads."""

from __future__ import annotations

import copy

import pytest
import torch

import softprompt as sp
from softprompt.model.compat import cache_of
from tests.tiny import tiny_base, tiny_model, tiny_tokenizer

FACTS = {  # arch -> (model_type, kv_heads, head_dim); all: hidden 32, 4 heads, 2 layers, vocab 99
    "llama": ("llama", 2, 8),
    "gpt2": ("gpt2", 4, 8),  # multi-head attention: kv_heads == heads
    "gemma3": ("gemma3_text", 2, 16),  # head_dim set explicitly, != hidden / heads
    "qwen2": ("qwen2", 2, 8),
}


def test_load_base_freezes_everything(arch):
    model = tiny_model(arch).train()
    assert all(p.requires_grad for p in model.parameters())
    base = sp.load_base((model, tiny_tokenizer()))
    assert base.model is model
    assert not any(p.requires_grad for p in base.model.parameters())
    assert not any(m.training for m in base.model.modules()), "the base runs in eval mode (no dropout)"
    assert base.dtype == torch.float32


def test_facts_are_read_off_the_model(arch):
    base = tiny_base(arch)
    model_type, kv_heads, head_dim = FACTS[arch]
    f = base.facts
    assert (f.model_type, f.hidden_size, f.num_layers, f.vocab_size, f.kv_heads, f.head_dim) == (
        model_type, 32, 2, 99, kv_heads, head_dim)
    assert len(base.layers) == f.num_layers
    assert tiny_base(arch, layers=4).facts.num_layers == 4
    # the K/V a real forward caches have exactly these sizes
    cache = cache_of(base.model(input_ids=torch.tensor([[5, 6, 7]]), use_cache=True))
    assert tuple(cache.layers[0].keys.shape) == (1, f.kv_heads, 3, f.head_dim)


def test_fingerprint_tells_models_apart(arch):
    a, b = tiny_base(arch, seed=0), tiny_base(arch, seed=1)
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint["embedding_sha256"] != b.fingerprint["embedding_sha256"]
    assert a.fingerprint == tiny_base(arch, seed=0).fingerprint, "the fingerprint is deterministic"
    for key in ("model_type", "hidden_size", "num_layers", "kv_heads", "head_dim", "tokenizer_sha256"):
        assert key in a.fingerprint


def test_fingerprint_is_equal_for_fp32_and_bf16_loads(arch):
    fp32 = sp.load_base((tiny_model(arch), tiny_tokenizer()))
    bf16 = sp.load_base((tiny_model(arch), tiny_tokenizer()), dtype="bf16")
    assert bf16.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in bf16.model.parameters())
    assert fp32.fingerprint == bf16.fingerprint


def test_a_missing_path_is_never_downloaded(tmp_path):
    with pytest.raises(sp.InputError, match="never downloaded") as e:
        sp.load_base("no/such/dir")
    assert "no/such/dir" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(sp.InputError, match="never downloaded"):
        sp.load_base(str(tmp_path / "empty"))  # a directory without config.json
    with pytest.raises(sp.InputError, match="hf download HuggingFaceTB/SmolLM2-135M"):
        sp.load_base("HuggingFaceTB/SmolLM2-135M")  # a hub id not in the cache: never fetched


def test_bad_arguments_raise_input_error():
    with pytest.raises(sp.InputError, match="fp8"):
        sp.load_base((tiny_model(), tiny_tokenizer()), dtype="fp8")
    with pytest.raises(sp.InputError):
        sp.load_base(42)


def test_pad_token_is_set_when_missing():
    tok = copy.deepcopy(tiny_tokenizer())
    tok.pad_token = None
    assert tok.pad_token_id is None
    base = sp.load_base((tiny_model(), tok))
    assert base.tokenizer.pad_token_id == base.tokenizer.eos_token_id is not None
    assert tiny_tokenizer().pad_token == "<pad>", "the shared tokenizer is left alone"
    kept = sp.load_base((tiny_model(), tiny_tokenizer()))
    assert kept.tokenizer.pad_token_id == 0, "an existing pad token is kept"


def test_loads_a_local_hugging_face_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = tiny_model("llama"), tiny_tokenizer()
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    base = sp.load_base(str(tmp_path / "m"))
    assert not any(p.requires_grad for p in base.model.parameters())
    assert base.fingerprint == sp.load_base((model, tok)).fingerprint
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(base.model(input_ids=ids).logits, model(input_ids=ids).logits)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test (a hub id must resolve from the cache alone)."""
    import socket

    def refuse(*_a, **_k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def make_hub_cache(root, repo_id: str, commit: str, model, tok) -> None:
    """The standard hub cache layout: models--org--name/{refs/main, snapshots/<commit>/...}."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    model.save_pretrained(repo / "snapshots" / commit)
    tok.save_pretrained(repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


@pytest.mark.parametrize("env", ["HF_HUB_CACHE", "HF_HOME"])
def test_loads_a_hub_id_from_the_local_cache_offline(tmp_path, monkeypatch, no_network, env):
    hub = tmp_path / "hub"
    monkeypatch.setenv(env, str(hub if env == "HF_HUB_CACHE" else tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE" if env == "HF_HOME" else "HF_HOME", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = tiny_model("llama"), tiny_tokenizer()
    old = tiny_model("llama", seed=1)
    make_hub_cache(hub, "tiny-org/tiny-llama", "a" * 40, model, tok)
    old.save_pretrained(hub / "models--tiny-org--tiny-llama" / "snapshots" / ("b" * 40))
    tok.save_pretrained(hub / "models--tiny-org--tiny-llama" / "snapshots" / ("b" * 40))
    base = sp.load_base("tiny-org/tiny-llama")
    assert base.name == "tiny-org/tiny-llama"
    assert base.fingerprint == sp.load_base((model, tok)).fingerprint
    at_b = sp.load_base("tiny-org/tiny-llama", revision="b" * 40)  # a commit: that snapshot, not main's
    assert at_b.fingerprint == sp.load_base((old, tok)).fingerprint != base.fingerprint


def test_an_uncached_hub_id_says_how_to_get_it(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # even online: the cache only, no network wait
    with pytest.raises(sp.InputError, match="hf download org/missing --revision v2") as e:
        sp.load_base("org/missing", revision="v2")
    assert str(tmp_path) in str(e.value)
    with pytest.raises(sp.InputError, match=r"hf download smollm3.*embedded default \(smollm2"):
        sp.load_base("smollm3")  # a one-word name: a Hub id, or a mistyped embedded default
    make_hub_cache(tmp_path, "org/there", "c" * 40, tiny_model("llama"), tiny_tokenizer())
    with pytest.raises(sp.InputError, match="revision 'nope'"):
        sp.load_base("org/there", revision="nope")
    for not_an_id in ((tiny_model(), tiny_tokenizer()), "smollm2"):
        with pytest.raises(sp.InputError, match="Hub ids only"):
            sp.load_base(not_an_id, revision="main")


def test_the_cli_revision_flag_picks_the_cached_snapshot(tmp_path, monkeypatch, no_network, capsys):
    from softprompt.cli.main import main

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = tiny_tokenizer()
    make_hub_cache(tmp_path, "tiny-org/tiny-llama", "a" * 40, tiny_model("llama"), tok)
    for commit in ("a" * 40, "main"):
        assert main(["generate", "--base", "tiny-org/tiny-llama", "--revision", commit, "--max-new-tokens", "2",
                     "hi"]) == 0
    capsys.readouterr()
    assert main(["generate", "--base", "tiny-org/tiny-llama", "--revision", "c" * 40, "hi"]) == 2
    assert f"at revision '{'c' * 40}'" in capsys.readouterr().err  # the flag reached the loader
    assert main(["generate", "--base", "smollm2", "--revision", "main", "hi"]) == 2
    assert "Hub ids only" in capsys.readouterr().err
