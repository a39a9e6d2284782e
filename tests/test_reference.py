"""Reference rows (training/reference.py): PEFT's LoRA and full fine-tuning trained by the same recipe, the base
restored after LoRA, the saved LoRA directory loadable by PEFT; TrainConfig(epochs=) sets the step count."""

from __future__ import annotations

import random
import sys
import warnings

import pytest
import torch

from softprompt.errors import ConfigError, InputError
from softprompt.templates import Template, Verbalizer
from softprompt.training.config import TrainConfig
from softprompt.training.reference import check_available, reference
from softprompt.training.task import Task, evaluate
from softprompt.training.tune import train
from tests.tiny import tiny_base, tiny_model

TASK = Task(Template.parse("{text}:{label}"), Verbalizer({"p": ["P"], "n": ["N"]}))


def _examples(base, n, seed=0):
    rng = random.Random(seed)
    recs = [{"text": "".join(rng.choice("abcxyz") for _ in range(rng.randint(3, 8))), "label": "p"} for _ in range(n)]
    return TASK.encode_all(recs, base.tokenizer)


def _logits(base, ids=(5, 9, 13, 21)):
    with torch.no_grad():
        return base.model(torch.tensor([list(ids)])).logits


def test_lora_trains_only_its_layers_and_leaves_the_base_as_it_was(tmp_path):
    base = tiny_base("llama", init_range=0.1)
    before = _logits(base)
    frozen = {n: p.detach().clone() for n, p in base.model.named_parameters()}
    ex = _examples(base, 32)
    with reference(base, "lora", seed=0) as ref:
        names = [n for n, p in base.model.named_parameters() if p.requires_grad]
        assert names and all("lora_" in n for n in names)
        assert {n.split(".")[-4] for n in names} == {"q_proj", "v_proj"}
        assert ref.num_trainable() == sum(p.numel() for p in base.model.parameters() if p.requires_grad)
        assert ref.parts() is None  # a plain row: the weights carry the task
        acc0 = evaluate(base, ref, TASK, ex)["accuracy"]
        res = train(ref, TASK, ex, ex, TrainConfig(steps=30, batch_size=8, warmup_steps=2, eval_every=10,
                                                   checkpoint_every=0, lr=2e-2), progress=False)
        assert res.steps_done == 30
        assert evaluate(base, ref, TASK, ex)["accuracy"] >= max(acc0, 0.9)
        during = _logits(base)
        out = ref.save(tmp_path / "lora")
    assert not torch.allclose(during, before)
    assert torch.equal(_logits(base), before)  # LoRA layers taken out again
    assert all(type(m).__module__.startswith("torch") or "peft" not in type(m).__module__
               for m in base.model.modules())
    assert not any(p.requires_grad for p in base.model.parameters())
    for n, p in base.model.named_parameters():
        assert torch.equal(p, frozen[n]), n

    # the directory is PEFT's own: PeftModel.from_pretrained on a fresh copy reproduces the trained model
    from peft import PeftModel

    assert {"adapter_model.safetensors", "adapter_config.json"} <= {f.name for f in out.iterdir()}
    with warnings.catch_warnings():  # PeftModel itself calls transformers' deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        fresh = PeftModel.from_pretrained(tiny_model("llama", init_range=0.1), str(out)).eval()
    with torch.no_grad():
        again = fresh(torch.tensor([[5, 9, 13, 21]])).logits
    torch.testing.assert_close(again, during, rtol=1e-5, atol=1e-5)


def test_lora_on_a_bf16_base_keeps_fp32_lora_weights():
    base = tiny_base("llama")
    base.model.to(torch.bfloat16)
    with reference(base, "lora") as ref:
        assert {p.dtype for p in ref.parameters()} == {torch.float32}
        loss, _ = TASK.loss(base, [ref] * 4, _examples(base, 4))
        loss.backward()
        assert all(p.grad is not None for p in ref.parameters())


def test_full_finetuning_trains_every_weight_and_needs_fp32():
    base = tiny_base("llama", init_range=0.1)
    n_all = sum(p.numel() for p in base.model.parameters())
    with reference(base, "full") as ref:
        assert ref.num_trainable() == n_all
        train(ref, TASK, _examples(base, 16), [], TrainConfig(steps=3, batch_size=8, warmup_steps=1,
                                                             checkpoint_every=0, eval_every=0), progress=False)
    assert not any(p.requires_grad for p in base.model.parameters())
    bf16 = tiny_base("llama")
    bf16.model.to(torch.bfloat16)
    with pytest.raises(InputError, match="fp32"):
        with reference(bf16, "full"):
            pass


def test_unknown_kind_and_missing_peft_fail_before_anything_trains(monkeypatch):
    with pytest.raises(InputError, match="must be one of"):
        check_available("qlora")
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(InputError, match=r"softprompt\[reference\]"):
        check_available("lora")


def test_lora_targets_must_exist():
    base = tiny_base("gpt2")  # GPT-2 names its attention projection c_attn
    with pytest.raises(InputError, match="not modules of"):
        with reference(base, "lora"):
            pass
    with reference(base, "lora", targets=("c_attn",)) as ref:
        assert ref.num_trainable() > 0


def test_epochs_set_the_step_count():
    assert TrainConfig(epochs=2, batch_size=8).steps_for(20) == 5
    assert TrainConfig(epochs=0.5, batch_size=4, grad_accum=2).steps_for(100) == 7
    assert TrainConfig(steps=11).steps_for(1000) == 11  # epochs=0: steps
    with pytest.raises(ConfigError, match="epochs=-1"):
        TrainConfig(epochs=-1)
    base = tiny_base("llama")
    from softprompt import attach, registry

    prompted = attach(base, registry.build_config("prompt_tuning", num_virtual_tokens=2))
    res = train(prompted, TASK, _examples(base, 20), [], TrainConfig(epochs=2, batch_size=8, warmup_steps=1,
                                                                    checkpoint_every=0, eval_every=0), progress=False)
    assert res.steps_done == 5
