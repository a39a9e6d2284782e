"""PEFT adapters in/out and vLLM prompt-embedding requests, checked against peft itself and a plain forward.

Equality is checked where PEFT's semantics and ours agree (unpadded and right-padded batches); the one place
they differ, left padding, is pinned down to position ids in test_peft_left_padding_differs_only_by_positions.
"""

from __future__ import annotations

import base64
import io
import json
import warnings
from types import SimpleNamespace

import pytest
import torch

import softprompt as sp
from softprompt.cli.main import main
from softprompt.errors import ArtifactError, InputError
from softprompt.interop import export_peft, export_vllm_embeds, import_peft, vllm_request_payload
from softprompt.interop.peft_format import kv_to_peft, peft_to_kv
from softprompt.model.compat import cache_kw
from tests.tiny import ARCHS, tiny_base, tiny_model, tiny_tokenizer

peft = pytest.importorskip("peft")

N = 4  # virtual tokens
ATOL = 1e-5
CONFIGS = {
    "prompt_tuning": lambda: sp.PromptTuningConfig(num_virtual_tokens=N),
    "p_tuning": lambda: sp.PTuningConfig(num_virtual_tokens=N, encoder_hidden=16),
    "prefix_tuning": lambda: sp.PrefixTuningConfig(num_virtual_tokens=N),
}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def trained(base, config, seed=0):
    """A prompt moved away from its initialisation (so a layout bug cannot hide behind symmetric values)."""
    p = sp.attach(base, config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prm in p.parameters():
            prm.add_(torch.randn(prm.shape, generator=g) * 0.5)
    return p


def batch(seed=0, B=3, L=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 99, (B, L), generator=g), torch.ones(B, L, dtype=torch.long)


def peft_logits(pm, ids, mask):
    """PEFT returns logits for virtual positions too (prompt/P-tuning); keep the caller's last L columns."""
    with torch.no_grad():
        return pm(input_ids=ids, attention_mask=mask).logits[:, -ids.shape[1]:]


def load_peft(arch, path):
    return peft.PeftModel.from_pretrained(tiny_model(arch), str(path)).eval()


def max_diff(a, b, mask=None):
    d = (a - b).abs()
    return (d[mask.bool()] if mask is not None else d).max().item()


# --- export: PEFT loads our adapter and computes our logits -------------------------------------------------

@pytest.mark.parametrize("method", list(CONFIGS))
@pytest.mark.parametrize("arch", ARCHS)
def test_export_peft_logits_match(arch, method, tmp_path):
    base = tiny_base(arch)
    p = trained(base, CONFIGS[method]())
    out = export_peft(p, tmp_path / "a")
    assert sorted(x.name for x in out.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    pm = load_peft(arch, out)
    assert pm.active_peft_config.peft_type.value == {"prompt_tuning": "PROMPT_TUNING", "p_tuning": "P_TUNING",
                                                     "prefix_tuning": "PREFIX_TUNING"}[method]
    ids, mask = batch()
    mask[0, 5:] = 0  # right padding: PEFT and softprompt agree at real tokens
    with torch.no_grad():
        ours = p(ids, mask)
        plain = base.logits(base.backbone(input_ids=ids, attention_mask=mask).last_hidden_state)
    theirs = peft_logits(pm, ids, mask)
    assert max_diff(ours, theirs, mask) <= ATOL
    assert max_diff(ours, plain, mask) > 1e-3  # the prompt really changes the output


def test_export_prefix_layout_is_peft_cache(tmp_path):
    """PEFT's get_prompt turns our flat tensor back into exactly our per-layer K/V (GQA: 2 kv heads of 4)."""
    base = tiny_base("llama")
    p = trained(base, CONFIGS["prefix_tuning"]())
    pm = load_peft("llama", export_peft(p, tmp_path / "a"))
    cache = pm.get_prompt(batch_size=2)
    keys, values = p.prompt.export_tensors()["keys"], p.prompt.export_tensors()["values"]
    assert keys.shape == (base.facts.num_layers, 2, N, base.facts.head_dim)
    for layer in range(base.facts.num_layers):
        assert torch.equal(cache.layers[layer].keys[1], keys[layer])
        assert torch.equal(cache.layers[layer].values[1], values[layer])


def test_kv_layout_inverse_and_order():
    L, kvh, n, hd = 3, 2, 5, 4
    keys, values = torch.randn(L, kvh, n, hd), torch.randn(L, kvh, n, hd)
    flat = kv_to_peft(keys, values)
    assert flat.shape == (n, L * 2 * kvh * hd)
    # per token: layer-major, then key/value, then head, then head_dim
    assert torch.equal(flat[2, :hd], keys[0, 0, 2])
    assert torch.equal(flat[2, kvh * hd:kvh * hd + hd], values[0, 0, 2])
    assert torch.equal(flat[2, 2 * kvh * hd + hd:2 * kvh * hd + 2 * hd], keys[1, 1, 2])
    k2, v2 = peft_to_kv(flat, L, kvh, hd)
    assert torch.equal(k2, keys) and torch.equal(v2, values)


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_peft_left_padding_differs_only_by_positions(method, tmp_path):
    """Left padding: PEFT puts the prompt before the pads and numbers positions by column; softprompt puts it
    next to the content and numbers from there. Replaying both layouts by hand shows position ids are the
    whole difference."""
    base = tiny_base("llama")
    p = trained(base, CONFIGS[method]())
    pm = load_peft("llama", export_peft(p, tmp_path / "a"))
    ids, mask = batch(B=1)
    pads = 2
    mask[0, :pads] = 0
    ours, theirs = p(ids, mask), peft_logits(pm, ids, mask)
    real = mask.bool()
    assert max_diff(ours, theirs, real) > 10 * ATOL  # equal layouts give 0.0 here

    L = ids.shape[1]
    prefix_mask = torch.ones(1, N, dtype=torch.long)
    col = torch.arange(N + L)[None]  # PEFT / transformers: position = column
    ours_pos = (col - torch.where(col >= N, pads, 0)).clamp(min=0)  # content follows the prompt directly
    with torch.no_grad():
        if method == "prompt_tuning":
            x = torch.cat([p.prompt.embeds[None], base.embed(ids)], dim=1)
            m = torch.cat([prefix_mask, mask], dim=1)

            def run(pos):
                return base.logits(base.backbone(inputs_embeds=x, attention_mask=m, position_ids=pos)
                                   .last_hidden_state)[:, N:]
        else:
            from transformers import DynamicCache

            def run(pos):
                cache = DynamicCache(config=base.model.config)
                for layer, (k, v) in enumerate(zip(*p.prompt.kv())):
                    cache.update(k[None], v[None], layer)
                m = torch.cat([prefix_mask, mask], dim=1)
                return base.logits(base.backbone(input_ids=ids, attention_mask=m, **cache_kw(base.backbone, cache),
                                                 position_ids=pos[:, N:]).last_hidden_state)
        assert max_diff(run(col), theirs, real) <= ATOL
        assert max_diff(run(ours_pos), ours, real) <= ATOL
        # Workaround for prefix tuning only: PEFT shifts caller position_ids by n (_adjust_prompt_learning_kwargs),
        # so mask-derived positions give softprompt's layout; for prompt tuning PEFT discards position_ids.
        by_mask = (mask.cumsum(-1) - 1).clamp(min=0)
        theirs_pos = pm(input_ids=ids, attention_mask=mask, position_ids=by_mask).logits[:, -L:]
    if method == "prefix_tuning":
        assert max_diff(theirs_pos, ours, real) <= ATOL
    else:
        assert max_diff(theirs_pos, theirs, real) == 0.0


def test_export_peft_refuses_other_methods(tmp_path):
    base = tiny_base("llama")
    for cfg in (sp.DeepPromptConfig(num_virtual_tokens=2), sp.AdapterConfig(bottleneck=4)):
        with pytest.raises(InputError, match="no PEFT prompt-learning equivalent"):
            export_peft(sp.attach(base, cfg), tmp_path / "x")
    assert not (tmp_path / "x").exists()


# --- import -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", list(CONFIGS))
def test_export_import_roundtrip(method, tmp_path):
    base = tiny_base("llama")
    p = trained(base, CONFIGS[method]())
    q = import_peft(export_peft(p, tmp_path / "a"), base)
    assert q.method == ("prefix_tuning" if method == "prefix_tuning" else "prompt_tuning")
    assert q.config.num_virtual_tokens == N
    a, b = p.prompt.export_tensors(), q.prompt.export_tensors()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ids, mask = batch()
    assert max_diff(p(ids, mask), q(ids, mask)) == 0.0
    # and it saves/loads as a normal softprompt prompt
    r = sp.load_prompt(q.save(tmp_path / "sp"), base)
    assert r.extra["imported_from"]["format"] == "peft"


PEFT_CONFIGS = {
    "prompt": lambda: peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=N),
    "ptuning-mlp": lambda: peft.PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=N,
                                                     encoder_hidden_size=16),
    "ptuning-lstm": lambda: peft.PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=N,
                                                      encoder_hidden_size=16, encoder_reparameterization_type="LSTM"),
    "prefix": lambda: peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=N),
    "prefix-proj": lambda: peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=N,
                                                    prefix_projection=True, encoder_hidden_size=16),
}


@pytest.mark.parametrize("kind", list(PEFT_CONFIGS))
@pytest.mark.parametrize("arch", ARCHS)
def test_import_peft_created_adapter(arch, kind, tmp_path):
    torch.manual_seed(1)
    trainee = peft.get_peft_model(tiny_model(arch), PEFT_CONFIGS[kind]())
    with torch.no_grad():  # PEFT's fresh prefix/encoder weights are small; make the prompt matter
        for prm in trainee.prompt_encoder.parameters():
            prm.mul_(5.0)
    trainee.save_pretrained(str(tmp_path / "a"))
    pm = load_peft(arch, tmp_path / "a")
    base = tiny_base(arch)
    q = import_peft(tmp_path / "a", base)
    assert q.method == ("prefix_tuning" if kind.startswith("prefix") else "prompt_tuning")
    ids, mask = batch()
    ours, theirs = q(ids, mask), peft_logits(pm, ids, mask)
    assert max_diff(ours, theirs) <= ATOL
    with torch.no_grad():
        trainee.eval()
        assert max_diff(ours, peft_logits(trainee, ids, mask)) <= 1e-4  # the encoder PEFT trained with
        plain = base.logits(base.backbone(input_ids=ids).last_hidden_state)
    assert max_diff(ours, plain) > 1e-3


def _save_peft(arch, tmp_path, **kw):
    m = peft.get_peft_model(tiny_model(arch), peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=N))
    m.save_pretrained(str(tmp_path / "a"), **kw)
    return tmp_path / "a"


def test_import_refuses_pickles(tmp_path):
    path = _save_peft("llama", tmp_path, safe_serialization=False)
    assert (path / "adapter_model.bin").exists() and not (path / "adapter_model.safetensors").exists()
    with pytest.raises(ArtifactError, match="only safetensors is accepted"):
        import_peft(path, tiny_base("llama"))


def test_import_reports_every_mismatch(tmp_path):
    base = tiny_base("llama")
    src = export_peft(trained(base, CONFIGS["prefix_tuning"]()), tmp_path / "a")
    with pytest.raises(ArtifactError) as e:
        import_peft(src, tiny_base("llama", layers=4))
    msg = str(e.value)  # 2 layers x K,V x 2 kv heads x head_dim 8 = 64 wide; 4 layers need 128
    assert "num_layers=2: this base has 4" in msg and "has shape (4, 64); this base needs (4, 128)" in msg
    with pytest.raises(ArtifactError) as e:
        import_peft(src, tiny_base("gpt2"))  # 4 kv heads (no GQA)
    msg = str(e.value)
    assert "num_attention_heads=2" in msg and "token_dim=16" in msg and "needs (4, 128)" in msg


def test_import_refuses_bad_adapters(tmp_path):
    base = tiny_base("llama")
    path = _save_peft("llama", tmp_path)
    cfg = json.loads((path / "adapter_config.json").read_text())

    (path / "adapter_config.json").write_text(json.dumps({**cfg, "peft_type": "LORA"}))
    with pytest.raises(ArtifactError, match="not a prompt-learning method"):
        import_peft(path, base)

    (path / "adapter_config.json").write_text(json.dumps({**cfg, "task_type": "SEQ_2_SEQ_LM",
                                                          "num_transformer_submodules": 2}))
    with pytest.raises(ArtifactError, match="num_transformer_submodules=2"):
        import_peft(path, base)

    from safetensors.torch import save_file

    (path / "adapter_config.json").write_text(json.dumps(cfg))
    save_file({"prompt_embeddings": torch.full((N, 32), float("nan"))}, str(path / "adapter_model.safetensors"))
    with pytest.raises(ArtifactError, match="NaN"):
        import_peft(path, base)
    save_file({"prompt_embeddings": torch.zeros(N, 32), "x": torch.zeros(1)}, str(path / "adapter_model.safetensors"))
    with pytest.raises(ArtifactError, match="holds only 'prompt_embeddings'"):
        import_peft(path, base)
    (path / "adapter_model.safetensors").write_bytes(b"\x80\x04not a safetensors file")
    with pytest.raises(ArtifactError, match="not a safetensors file"):
        import_peft(path, base)


# --- vLLM prompt embeddings ---------------------------------------------------------------------------------

def decode_like_vllm(b64: str) -> torch.Tensor:
    """What vLLM's server does with `prompt_embeds` (vllm load_prompt_embeds): base64 -> torch.load with
    weights_only=True and sparse-invariant checks -> [seq, hidden]. Test-only: it decodes a payload this
    process just built."""
    with torch.sparse.check_sparse_tensor_invariants():
        t = torch.load(io.BytesIO(base64.b64decode(b64, validate=True)), weights_only=True,
                       map_location="cpu")
    assert isinstance(t, torch.Tensor) and t.dtype in (torch.float32, torch.bfloat16, torch.float16)
    t = t.to_dense()
    assert t.dim() == 2
    return t


@pytest.mark.parametrize("method", ["prompt_tuning", "p_tuning"])
@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_vllm_payload_is_prompt_then_token_embeddings(arch, method):
    base = tiny_base(arch)
    p = trained(base, CONFIGS[method]())
    text = "Review: great film. Sentiment:"
    body = vllm_request_payload(p, text, model="tiny", max_tokens=5)
    assert body["model"] == "tiny" and body["max_tokens"] == 5 and "prompt" not in body
    t = decode_like_vllm(body["prompt_embeds"])
    ids = torch.tensor(base.encode([text]))
    with torch.no_grad():
        expected = torch.cat([p.prompt.export_tensors()["embeds"], base.embed(ids)[0]], dim=0)
    assert t.dtype == torch.float32 and t.shape == (N + ids.shape[1], base.facts.hidden_size)
    assert torch.equal(t, expected)
    # the serialised storage is exactly this tensor (no larger storage leaks into the request)
    assert len(base64.b64decode(body["prompt_embeds"])) < t.numel() * 4 + 2048
    # a server feeding it as inputs_embeds at positions 0.. computes softprompt's logits
    with torch.no_grad():
        served = base.logits(base.backbone(inputs_embeds=t[None]).last_hidden_state)[:, N:]
    assert max_diff(served, p(ids)) <= ATOL


def test_vllm_payload_half_precision():
    base = tiny_base("llama")
    p = trained(base, CONFIGS["prompt_tuning"]())
    t = decode_like_vllm(vllm_request_payload(p, "hi", dtype="bfloat16")["prompt_embeds"])
    full = decode_like_vllm(vllm_request_payload(p, "hi")["prompt_embeds"])
    assert t.dtype == torch.bfloat16 and torch.equal(t, full.to(torch.bfloat16))
    with pytest.raises(InputError, match="vLLM accepts"):
        vllm_request_payload(p, "hi", dtype="float64")


def test_vllm_refuses_methods_beyond_input_embeddings(tmp_path):
    base = tiny_base("llama")
    for cfg in (sp.PrefixTuningConfig(num_virtual_tokens=2), sp.DeepPromptConfig(num_virtual_tokens=2),
                sp.AdapterConfig(bottleneck=4)):
        p = sp.attach(base, cfg)
        with pytest.raises(InputError, match="can only carry input embeddings"):
            vllm_request_payload(p, "hi")
        with pytest.raises(InputError, match="can only carry input embeddings"):
            export_vllm_embeds(p, tmp_path / "v")
    assert not (tmp_path / "v").exists()
    templated = SimpleNamespace(method="prompt_tuning", parts=lambda: sp.PromptParts(slots=torch.zeros(2, 32)))
    with pytest.raises(InputError, match="soft slots"):
        vllm_request_payload(templated, "hi")


def test_export_vllm_embeds_files(tmp_path):
    from safetensors.torch import load_file

    base = tiny_base("llama")
    p = trained(base, CONFIGS["p_tuning"]())
    out = export_vllm_embeds(p, tmp_path / "v", texts=["one", "two words"], model="served")
    assert sorted(x.name for x in out.iterdir()) == ["requests.jsonl", "soft_prompt.safetensors", "vllm_prompt.json"]
    assert torch.equal(load_file(str(out / "soft_prompt.safetensors"))["embeds"], p.prompt.export_tensors()["embeds"])
    meta = json.loads((out / "vllm_prompt.json").read_text())
    assert meta["num_virtual_tokens"] == N and meta["hidden_size"] == 32 and meta["model"] == "served"
    assert meta["base"] == base.fingerprint and meta["method"] == "p_tuning"
    lines = (out / "requests.jsonl").read_text().splitlines()
    assert len(lines) == 2
    for line, text in zip(lines, ["one", "two words"]):
        body = json.loads(line)
        assert body["model"] == "served"
        assert torch.equal(decode_like_vllm(body["prompt_embeds"]),
                           decode_like_vllm(vllm_request_payload(p, text)["prompt_embeds"]))
    assert not (export_vllm_embeds(p, tmp_path / "w") / "requests.jsonl").exists()


# --- CLI ----------------------------------------------------------------------------------------------------

def test_cli_export_import(tmp_path, capsys):
    model_dir = tmp_path / "model"
    tiny_model("llama").save_pretrained(str(model_dir))
    tiny_tokenizer().save_pretrained(str(model_dir))
    base = sp.load_base(str(model_dir))
    p = trained(base, CONFIGS["prefix_tuning"]())
    p.save(tmp_path / "prompt")

    b = ["--base", str(model_dir)]
    assert main(["export", *b, "--prompt", str(tmp_path / "prompt"), "--format", "peft",
                 "--out", str(tmp_path / "peft")]) == 0
    pm = load_peft("llama", tmp_path / "peft")
    ids, mask = batch()
    assert max_diff(p(ids, mask), peft_logits(pm, ids, mask)) <= ATOL

    assert main(["import", *b, "--peft", str(tmp_path / "peft"), "--out", str(tmp_path / "back")]) == 0
    q = sp.load_prompt(tmp_path / "back", base)
    assert torch.equal(q.prompt.export_tensors()["keys"], p.prompt.export_tensors()["keys"])

    # prefix tuning cannot go to vLLM: the CLI reports it as an error (exit 2), writes nothing
    assert main(["export", *b, "--prompt", str(tmp_path / "prompt"), "--format", "vllm-embeds",
                 "--out", str(tmp_path / "v")]) == 2
    assert "input embeddings" in capsys.readouterr().err and not (tmp_path / "v").exists()

    pt = trained(base, CONFIGS["prompt_tuning"]())
    pt.save(tmp_path / "pt")
    assert main(["export", *b, "--prompt", str(tmp_path / "pt"), "--format", "vllm-embeds",
                 "--out", str(tmp_path / "v"), "--text", "hello"]) == 0
    body = json.loads((tmp_path / "v" / "requests.jsonl").read_text())
    assert torch.equal(decode_like_vllm(body["prompt_embeds"]),
                       decode_like_vllm(vllm_request_payload(pt, "hello")["prompt_embeds"]))
