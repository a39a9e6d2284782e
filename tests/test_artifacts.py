"""Artifacts: safetensors + JSON manifest, kilobytes, exact round trips, and every refusal names its cause."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import softprompt as sp
from tests.test_exactness import METHODS, assert_close, make_prompt, rand_ids, row_ids, shared_base, shared_prompt
from tests.tiny import tiny_base

MANIFEST, TENSORS = "manifest.json", "prompt.safetensors"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A prompt-tuning artifact for the llama tiny model, copied by each test that tampers with it."""
    path = tmp_path_factory.mktemp("art") / "pt"
    shared_prompt("llama", "prompt_tuning").save(path)
    return path


@pytest.fixture
def copy(saved, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(saved, dst)
    return dst


def read_manifest(path: Path) -> dict:
    return json.loads((path / MANIFEST).read_text())


def write_manifest(path: Path, m: dict) -> None:
    (path / MANIFEST).write_text(json.dumps(m))


def replace_tensors(path: Path, blob: bytes, *, update_shapes: bool = False) -> None:
    """Put new tensor bytes in the artifact and make the digest (and optionally the shapes) match them."""
    (path / TENSORS).write_bytes(blob)
    m = read_manifest(path)
    m["sha256"] = hashlib.sha256(blob).hexdigest()
    if update_shapes:
        m["tensors"] = {k: {"shape": list(v.shape), "dtype": "float32"} for k, v in st_load(blob).items()}
    write_manifest(path, m)


def logits(prompt: sp.Prompted, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return prompt(ids)


@pytest.mark.parametrize("name", METHODS)
def test_round_trip_gives_equal_logits_and_a_kilobyte_artifact(arch, name, tmp_path):
    base = shared_base(arch)
    p = shared_prompt(arch, name)
    out = p.save(tmp_path / name)
    assert sorted(f.name for f in out.iterdir()) == ["README.md", MANIFEST, TENSORS]
    size = sum(f.stat().st_size for f in out.iterdir())
    assert size < 100_000, f"{size} bytes on disk"
    q = sp.load_prompt(out, base)
    assert q.method == p.method and q.config == p.config
    ids = torch.tensor([row_ids(p, rand_ids(1, 6)[0].tolist())])
    assert_close(logits(q, ids), logits(p, ids))
    assert list(q.parameters()), "a loaded prompt stays trainable"


def test_manifest_records_what_produced_the_artifact(copy):
    base = shared_base("llama")
    p = shared_prompt("llama", "prompt_tuning")
    m = read_manifest(copy)
    assert m["schema_version"] == 1
    assert m["method"] == "prompt_tuning"
    assert m["config"] == p.config.to_dict()
    assert m["tensors"] == {"embeds": {"shape": [p.config.num_virtual_tokens, 32], "dtype": "float32"}}
    assert m["base"] == base.fingerprint
    assert m["library_version"] == sp.__version__
    assert m["sha256"] == hashlib.sha256((copy / TENSORS).read_bytes()).hexdigest()


@pytest.mark.parametrize("encoder", ["mlp", "lstm"])
def test_p_tuning_is_saved_as_plain_embeddings(encoder, tmp_path):
    base = shared_base("llama")
    p = shared_prompt("llama", f"p_tuning_{encoder}")
    p.save(tmp_path / "pt")
    tensors = st_load((tmp_path / "pt" / TENSORS).read_bytes())
    assert set(tensors) == {"embeds"}
    torch.testing.assert_close(tensors["embeds"], p.prompt.embeds().detach(), atol=0, rtol=0)
    q = sp.load_prompt(tmp_path / "pt", base)
    assert not [n for n, _ in q.named_parameters() if "embeds" not in n and "inputs" not in n], "no encoder"


def test_reparameterized_prefix_is_saved_folded(tmp_path):
    base = shared_base("llama")
    p = shared_prompt("llama", "prefix_tuning_reparam")
    assert p.prompt.mlp is not None
    p.save(tmp_path / "pre")
    tensors = st_load((tmp_path / "pre" / TENSORS).read_bytes())
    assert set(tensors) == {"keys", "values"}, "the MLP must be folded away"
    keys, values = p.prompt.kv()
    torch.testing.assert_close(tensors["keys"], keys.detach(), atol=0, rtol=0)
    torch.testing.assert_close(tensors["values"], values.detach(), atol=0, rtol=0)
    q = sp.load_prompt(tmp_path / "pre", base)
    assert q.prompt.mlp is None and q.config.reparameterize


@pytest.mark.parametrize("name", METHODS)
def test_refuses_a_base_model_with_other_weights(name, tmp_path):
    shared_prompt("llama", name).save(tmp_path / "a")
    with pytest.raises(sp.IncompatibleBaseError, match="embedding_sha256"):
        sp.load_prompt(tmp_path / "a", tiny_base("llama", seed=1))


@pytest.mark.parametrize("other, cause", [(dict(arch="llama", layers=4), "num_layers"),
                                          (dict(arch="qwen2"), "model_type"),
                                          (dict(arch="gemma3"), "head_dim")])
def test_refuses_a_base_model_of_other_sizes(saved, other, cause):
    with pytest.raises(sp.IncompatibleBaseError, match=cause):
        sp.load_prompt(saved, tiny_base(**other))


def test_refuses_tensors_of_the_wrong_shape(copy):
    base = shared_base("llama")
    bad = st_save({"embeds": torch.zeros(5, 32)})
    replace_tensors(copy, bad)  # the manifest still declares [3, 32]
    with pytest.raises(sp.ArtifactError, match="shape"):
        sp.load_prompt(copy, base)
    replace_tensors(copy, bad, update_shapes=True)  # consistent file, but not what the config needs
    with pytest.raises(sp.ArtifactError, match="shape"):
        sp.load_prompt(copy, base)
    replace_tensors(copy, st_save({"other": torch.zeros(3, 32)}), update_shapes=True)
    with pytest.raises(sp.ArtifactError, match="other"):
        sp.load_prompt(copy, base)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_refuses_non_finite_values(copy, value):
    t = st_load((copy / TENSORS).read_bytes())
    t["embeds"][1, 2] = value
    replace_tensors(copy, st_save(t))
    with pytest.raises(sp.ArtifactError, match="NaN or inf"):
        sp.load_prompt(copy, shared_base("llama"))


def test_refuses_an_unknown_schema_version(copy):
    m = read_manifest(copy)
    m["schema_version"] = 2
    write_manifest(copy, m)
    with pytest.raises(sp.ArtifactError, match="schema_version"):
        sp.load_prompt(copy, shared_base("llama"))


@pytest.mark.parametrize("extra", ["model.pkl", "notes.txt", "adapter_model.bin"])
def test_refuses_any_extra_file(copy, extra):
    (copy / extra).write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(sp.ArtifactError, match=extra.replace(".", r"\.")):
        sp.load_prompt(copy, shared_base("llama"))


class Payload:
    """Unpickling this creates a marker file: it must never happen."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("fix_digest", [False, True])
def test_a_pickle_named_prompt_safetensors_is_refused_and_never_executed(copy, tmp_path, protocol, fix_digest):
    marker = tmp_path / "pwned"
    blob = pickle.dumps(Payload(marker), protocol=protocol)
    assert not marker.exists()
    if fix_digest:
        replace_tensors(copy, blob)
    else:
        (copy / TENSORS).write_bytes(blob)
    with pytest.raises(sp.ArtifactError, match="safetensors" if fix_digest else "digest"):
        sp.load_prompt(copy, shared_base("llama"))
    assert not marker.exists(), "the pickle payload was executed"
    # a torch.save archive (zip + pickle) is refused the same way
    torch.save({"embeds": Payload(marker)}, copy / TENSORS)
    replace_tensors(copy, (copy / TENSORS).read_bytes())
    with pytest.raises(sp.ArtifactError, match="safetensors"):
        sp.load_prompt(copy, shared_base("llama"))
    assert not marker.exists(), "the pickle payload was executed"


@pytest.mark.parametrize("where", [0.3, 0.99])
def test_refuses_a_corrupted_byte(copy, where):
    blob = bytearray((copy / TENSORS).read_bytes())
    blob[int(len(blob) * where)] ^= 0x01
    (copy / TENSORS).write_bytes(bytes(blob))
    with pytest.raises(sp.ArtifactError, match="digest"):
        sp.load_prompt(copy, shared_base("llama"))


@pytest.mark.parametrize("text", ["{not json", "", "\xff\xfe", "[1, 2]", '{"schema": "other"}'])
def test_refuses_an_invalid_manifest(copy, text):
    (copy / MANIFEST).write_bytes(text.encode("latin-1"))
    with pytest.raises(sp.ArtifactError, match="manifest.json"):
        sp.load_prompt(copy, shared_base("llama"))


@pytest.mark.parametrize("change", [
    {"method": "no_such_method"},
    {"tensors": "embeds"},
    {"tensors": {"embeds": {"shape": 3, "dtype": "float32"}}},
    {"base": "llama"},
    {"config": 5},
    {"config": {"num_virtual_tokens": 3, "init": "text", "init_text": 5}},
    {"config": {"num_virtual_tokens": 3, "bogus": 1}},
    {"extra": [1]},
], ids=lambda c: json.dumps(c)[:40])
def test_a_malformed_manifest_raises_artifact_error(copy, change):
    """The manifest is not covered by the digest: any edit to it must still end in an ArtifactError."""
    m = read_manifest(copy)
    m.update(change)
    write_manifest(copy, m)
    with pytest.raises(sp.ArtifactError):
        sp.load_prompt(copy, shared_base("llama"))


def test_missing_files_and_directories_are_refused(copy, tmp_path):
    base = shared_base("llama")
    with pytest.raises(sp.ArtifactError, match="no such prompt directory"):
        sp.load_prompt(tmp_path / "nowhere", base)
    (copy / TENSORS).unlink()
    with pytest.raises(sp.ArtifactError, match=TENSORS):
        sp.load_prompt(copy, base)


def test_saving_over_an_artifact_replaces_it(tmp_path):
    base = shared_base("llama")
    a, b = make_prompt(base, "prompt_tuning", seed=1), make_prompt(base, "prompt_tuning", seed=2)
    a.save(tmp_path / "p")
    b.save(tmp_path / "p")
    assert sorted(f.name for f in tmp_path.iterdir()) == ["p"], "no temp or old directories left behind"
    q = sp.load_prompt(tmp_path / "p", base)
    assert torch.equal(q.prompt.embeds, b.prompt.embeds)
