"""Smoke test on the real embedded model: it installs from its package, trains a few steps, generates.

A broken install step (missing package, GGUF loading deps) shows here in CI, not in a user's hands.
"""

from __future__ import annotations

import pytest
import torch

import softprompt as sp
from softprompt.training.run import load_data, make_task
from softprompt.training.tune import TrainConfig, train


@pytest.fixture(scope="module")
def smollm2():
    return sp.load_base("smollm2")


def test_real_model_trains_generates_and_round_trips(smollm2, tmp_path):
    base = smollm2
    assert base.facts.model_type == "llama" and base.facts.num_layers == 30 and base.facts.hidden_size == 576
    assert not any(p.requires_grad for p in base.model.parameters())
    data = load_data("rotten_tomatoes")
    task = make_task("rotten_tomatoes", None, None)
    ex = task.encode_all(data.train[:48], base.tokenizer)
    p = sp.attach(base, sp.PromptTuningConfig(num_virtual_tokens=8, init="text",
                                              init_text="Classify the sentiment of this review."))
    before = p.prompt.embeds.detach().clone()
    res = train(p, task, ex, ex[:16], TrainConfig(steps=4, batch_size=8, warmup_steps=1, eval_every=0),
                progress=False)
    losses = [r["loss"] for r in res.history if r["kind"] == "train"]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(before, p.prompt.embeds.detach())
    out = p.generate(["Review: a gem of a film, funny and moving.\nSentiment:"], max_new_tokens=3)
    assert isinstance(out[0], str) and len(out[0]) > 0
    path = p.save(tmp_path / "prompt", **task.to_extra())
    assert sum(f.stat().st_size for f in path.iterdir()) < 64 * 1024  # kilobytes, not a model copy
    again = sp.load_prompt(path, base)
    ids = torch.tensor([base.encode(["Review: dull.\nSentiment:"])[0]])
    assert torch.allclose(again(ids), p(ids), atol=1e-5)
