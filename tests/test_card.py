"""The README.md model card of a saved prompt: generated from the manifest, Hugging Face front matter, and the
one extra file loading accepts (never read)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import softprompt as sp
from softprompt.templates import Template, Verbalizer
from tests.test_exactness import assert_close, rand_ids, shared_base, shared_prompt
from tests.tiny import tiny_model, tiny_tokenizer


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_a_saved_prompt_carries_a_model_card(tmp_path):
    base = sp.load_base((tiny_model("llama"), tiny_tokenizer()))
    base.name = "tiny-org/tiny-llama"  # as sp.load_base("tiny-org/tiny-llama") names it
    p = sp.attach(base, sp.PromptTuningConfig(num_virtual_tokens=3, init="random"))
    template = Template.parse("Review: {text}\nSentiment: {label}")
    verb = Verbalizer.from_dict({"classes": ["pos", "neg"], "label_words": {"pos": ["good"], "neg": ["bad"]}})
    rows = [{"split": "test", "accuracy": 0.875, "step": 40}]
    out = p.save_pretrained(tmp_path / "p", template=template.to_dict(), verbalizer=verb.to_dict(),
                            results=rows, val_accuracy=0.9)
    card = (out / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "softprompt"
    assert meta["base_model"] == "tiny-org/tiny-llama"
    assert {"softprompt", "prompt-tuning", "llama"} <= set(meta["tags"])
    fp = base.fingerprint
    for text in ("prompt_tuning", fp["embedding_sha256"], fp["tokenizer_sha256"], "Review: {text}",
                 "'good'", "| 0.875 | test | 40 |", "val_accuracy", f"{3 * 32:,} parameters",
                 "sp.load_base('tiny-org/tiny-llama')", "Prompted.from_pretrained", "softprompt push"):
        assert text in card, text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sha256"][:16] in card


def test_a_card_without_metrics_or_a_hub_base_says_only_what_it_knows(tmp_path):
    p = shared_prompt("gpt2", "prefix_tuning")
    card = (p.save(tmp_path / "p") / "README.md").read_text()
    meta = front_matter(card)
    assert "base_model" not in meta, "a base built in code has no Hub id"
    assert "## Metrics" not in card and "## Template" not in card
    assert "prefix_tuning" in card and "https://arxiv.org/abs/2101.00190" in card
    assert "sp.load_base(...)" in card, "no made-up name to load a base built in code by"


def test_from_pretrained_loads_what_save_pretrained_wrote(tmp_path):
    base = shared_base("llama")
    p = shared_prompt("llama", "deep_prompt")
    q = sp.Prompted.from_pretrained(p.save_pretrained(tmp_path / "p"), base)
    ids = rand_ids(1, 5)
    with torch.no_grad():
        assert_close(q(ids), p(ids))
    (tmp_path / "p" / "README.md").write_text("edited by hand: the card is never read")
    sp.load_prompt(tmp_path / "p", base)
    (tmp_path / "p" / "README.md").unlink()
    sp.load_prompt(tmp_path / "p", base)  # the card is optional


def test_only_the_card_is_accepted_beside_the_artifact(tmp_path):
    base = shared_base("llama")
    out = shared_prompt("llama", "prompt_tuning").save(tmp_path / "p")
    (out / "readme.md").write_text("x")
    with pytest.raises(sp.ArtifactError, match=r"readme\.md"):
        sp.load_prompt(out, base)
    (out / "readme.md").unlink()
    (out / "README.md").unlink()
    (out / "README.md").mkdir()
    with pytest.raises(sp.ArtifactError, match=r"README\.md"):
        sp.load_prompt(out, base)
