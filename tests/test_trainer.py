"""Hugging Face compatibility: Prompted answers like a causal LM (labels -> CausalLMOutput.loss), and a real
`transformers.Trainer` trains a soft prompt, moving only the soft parameters."""

from __future__ import annotations

import copy

import pytest
import torch

import softprompt as sp
from tests.tiny import tiny_base

pytest.importorskip("accelerate")  # transformers.Trainer needs it (the `trainer` extra)

PAIRS = [("ab", "ok"), ("cde", "yes"), ("xyz", "no"), ("hello", "maybe")]


def _features(tokenizer) -> list[dict[str, list[int]]]:
    """Each example: '<text>=<answer>'; the loss is on the answer tokens only (labels -100 elsewhere)."""
    out = []
    for text, answer in PAIRS * 4:
        prompt = tokenizer(text + "=", add_special_tokens=False)["input_ids"]
        target = tokenizer(answer, add_special_tokens=False)["input_ids"]
        out.append({"input_ids": prompt + target, "labels": [-100] * len(prompt) + target})
    return out


def _collate(features: list[dict]) -> dict[str, torch.Tensor]:
    """Right padding; pads are masked and carry label -100."""
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.zeros(len(features), width, dtype=torch.long)
    mask = torch.zeros(len(features), width, dtype=torch.long)
    labels = torch.full((len(features), width), -100, dtype=torch.long)
    for i, f in enumerate(features):
        n = len(f["input_ids"])
        ids[i, :n], mask[i, :n], labels[i, :n] = torch.tensor(f["input_ids"]), 1, torch.tensor(f["labels"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _mean_loss(p: sp.Prompted, batch: dict[str, torch.Tensor]) -> float:
    with torch.no_grad():
        return float(p(**batch).loss)


def test_labels_give_the_standard_causal_lm_loss_and_no_labels_the_bare_logits():
    base = tiny_base("llama")
    batch = _collate(_features(base.tokenizer)[:4])
    # the loss definition against the Hugging Face model's own (shift by one, -100 ignored)
    hf = base.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    ours = sp.prompted.causal_lm_loss(hf.logits, batch["labels"])
    assert torch.allclose(ours, hf.loss, atol=1e-5)
    p = sp.attach(base, sp.PromptTuningConfig(num_virtual_tokens=2))
    out = p(**batch)
    assert type(out).__name__ == "CausalLMOutput" and out.loss.ndim == 0 and out.loss.requires_grad
    logits = p(batch["input_ids"], batch["attention_mask"])  # old callers: a bare tensor
    assert isinstance(logits, torch.Tensor) and logits.shape == (*batch["input_ids"].shape, 99)
    assert torch.equal(out.logits, logits)  # logits only for the caller's positions
    assert torch.allclose(out.loss, sp.prompted.causal_lm_loss(logits, batch["labels"]))


def test_transformers_trainer_trains_only_the_soft_prompt(tmp_path):
    from safetensors.torch import load_file
    from transformers import Trainer, TrainingArguments

    base = tiny_base("llama", init_range=0.2)
    frozen = copy.deepcopy(base.model.state_dict())
    p = sp.attach(base, sp.PromptTuningConfig(num_virtual_tokens=4))
    start = p.prompt.embeds.detach().clone()
    features = _features(base.tokenizer)
    everything = _collate(features)
    before = _mean_loss(p, everything)
    args = TrainingArguments(output_dir=str(tmp_path / "hf"), per_device_train_batch_size=8, max_steps=12,
                             learning_rate=5e-2, lr_scheduler_type="constant", warmup_steps=0, logging_steps=1,
                             save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
                             dataloader_num_workers=0)
    trainer = Trainer(model=sp.TrainerModel(p), args=args, train_dataset=features, data_collator=_collate)
    result = trainer.train()
    after = _mean_loss(p, everything)
    assert after < before - 0.05, (before, after)
    assert result.global_step == 12
    assert not torch.equal(p.prompt.embeds.detach(), start), "the soft prompt must move"
    now = base.model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in frozen.items()), "base weights must stay bit-identical"
    assert all(t.grad is None for t in base.model.parameters())
    # Trainer's save writes the soft parameters (only those) as safetensors; prompted.save writes the artifact
    trainer.save_model(str(tmp_path / "final"))
    saved = load_file(str(tmp_path / "final" / "model.safetensors"))
    assert saved.keys() == {"prompted.prompt.embeds"}
    assert torch.equal(saved["prompted.prompt.embeds"], p.prompt.embeds.detach())
    again = sp.load_prompt(p.save(tmp_path / "prompt"), base)
    assert torch.equal(again.prompt.embeds, p.prompt.embeds.detach())
