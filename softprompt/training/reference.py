"""Reference rows: what a user would train instead of a soft prompt, on the same task, loss, recipe and evaluation.

    with reference(base, "lora", seed=0) as ref:    # PEFT's LoRA, r=8 on q_proj and v_proj
        train(ref, task, train_examples, val_examples, TrainConfig(epochs=2))
        evaluate(base, ref, task, test_examples)

- ``lora``: PEFT's LoRA injected into the base's own attention projections (the `peft` package, in the `test`
  and `reference` extras). On exit the LoRA layers are taken out again and the base is exactly as before.
- ``full``: every weight of the base trains (the ceiling). The base is changed for good, so give it a base of its
  own, loaded in fp32 (AdamW's updates vanish in bf16 weights).

A reference is not a method: it changes the model, so nothing of it can be served by softprompt or stored as a
prompt. It quacks like a `Prompted` for `train` and `evaluate`: its rows run as plain rows (`parts` is None), its
`parameters()` are the base weights that train, `prompt.state_dict()` holds exactly those (best-checkpoint
selection keeps them), and `save` writes the artifact a user would ship (LoRA: PEFT's adapter directory).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from softprompt.errors import InputError

KINDS = ("lora", "full")


@dataclass(frozen=True)
class ReferenceConfig:
    """What the reference row trains; the fields `train` reads off a method config."""

    kind: str
    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    method: ClassVar[str] = "reference"
    num_virtual_tokens: ClassVar[int] = 0

    @property
    def default_lr(self) -> float:
        return {"lora": 5e-4, "full": 2e-5}[self.kind]

    def task_template(self) -> None:
        return None

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "full":
            return {"kind": "full"}
        return {"kind": "lora", "rank": self.rank, "alpha": self.alpha, "targets": list(self.targets)}


class _Weights(nn.Module):
    """The trained base weights under flat names: the same Parameter objects as the model's, not copies."""

    def __init__(self, named: dict[str, nn.Parameter]):
        super().__init__()
        self.params = nn.ParameterDict({n.replace(".", "__"): p for n, p in named.items()})


class Reference(nn.Module):
    """A reference row on a base: what `train` and `evaluate` need of a `Prompted` (see the module docstring)."""

    def __init__(self, base: Any, config: ReferenceConfig, lora: Any = None):
        super().__init__()
        object.__setattr__(self, "base", base)  # shared, not a submodule
        object.__setattr__(self, "_lora", lora)  # peft's LoraModel tuner, for saving
        self.config = config
        named = {n: p for n, p in base.model.named_parameters() if p.requires_grad}
        if not named:
            raise InputError(f"reference {config.kind!r}: no base weight trains")
        self.prompt = _Weights(named)

    @property
    def method(self) -> str:
        return "lora" if self.config.kind == "lora" else "full_finetune"

    def parts(self, base: Any = None) -> None:
        return None  # a plain row: the weights carry the task

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def save(self, path: str | Path, **extra: Any) -> Path:
        """The artifact a user of this reference ships: LoRA's PEFT adapter directory (safetensors + JSON), or
        for full fine-tuning the whole model's safetensors."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        if self._lora is not None:
            _save_lora(self._lora, out)
        else:
            self.base.model.save_pretrained(str(out))
        (out / "reference.json").write_text(json.dumps({**self.config.to_dict(), **_jsonable(extra)}, indent=1))
        return out


def _save_lora(tuner: Any, out: Path) -> None:
    """PEFT's adapter directory (adapter_model.safetensors + adapter_config.json), loadable by
    `PeftModel.from_pretrained`: the keys PeftModel.save_pretrained writes."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    state = get_peft_model_state_dict(tuner, adapter_name="default", save_embedding_layers=False)
    save_file({f"base_model.{k}": v.detach().contiguous() for k, v in state.items()},
              str(out / "adapter_model.safetensors"))
    tuner.peft_config["default"].save_pretrained(str(out))


def _jsonable(extra: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in extra.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))}


def _peft() -> tuple[Any, Any]:
    try:
        from peft import LoraConfig, LoraModel
    except ImportError:
        raise InputError("the LoRA reference needs PEFT: pip install 'softprompt[reference]' "
                         "(or leave the reference out: --reference none)") from None
    return LoraConfig, LoraModel


def check_available(kind: str) -> None:
    """Fail now, before any training, if the reference `kind` cannot run here."""
    if kind not in KINDS:
        raise InputError(f"reference {kind!r}: must be one of {', '.join(KINDS)}")
    if kind == "lora":
        _peft()


@contextlib.contextmanager
def reference(base: Any, kind: str, *, seed: int = 0, rank: int = 8, alpha: int = 16,
              targets: tuple[str, ...] = ("q_proj", "v_proj")) -> Iterator[Reference]:
    """A reference row on `base` for the duration of the block (see the module docstring)."""
    check_available(kind)
    config = ReferenceConfig(kind, rank, alpha, tuple(targets))
    if kind == "full":
        if base.dtype != torch.float32:
            raise InputError(f"full fine-tuning needs an fp32 base (this one is {base.dtype}): AdamW's updates "
                             "are below bf16's resolution; load a second base with dtype='fp32'")
        base.model.requires_grad_(True)
        try:
            yield Reference(base, config)
        finally:
            base.model.requires_grad_(False)
        return
    LoraConfig, LoraModel = _peft()
    present = {n.rsplit(".", 1)[-1]: m for n, m in base.model.named_modules()}
    missing = [t for t in targets if t not in present]
    if missing:
        raise InputError(f"LoRA targets {missing} are not modules of {type(base.model).__name__}")
    conv1d = any(type(present[t]).__name__ == "Conv1D" for t in targets)  # GPT-2's [in, out] weights
    torch.manual_seed(seed)  # LoRA's A matrices are random (B starts at zero)
    lora_config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets), bias="none",
                             fan_in_fan_out=conv1d,
                             task_type="CAUSAL_LM", base_model_name_or_path=getattr(base, "name", None))
    # the tuner PEFT's inject_adapter_in_model builds (get_peft_model's PeftModel wrapper adds nothing we use)
    tuner = LoraModel(base.model, lora_config, "default")
    for name, p in base.model.named_parameters():  # fp32 LoRA weights on a bf16 base, as get_peft_model's
        if "lora_" in name and p.dtype != torch.float32:  # autocast_adapter_dtype does (AdamW's steps are below
            p.data = p.data.float()  # bf16's resolution); PEFT's layers cast their input to the LoRA dtype
    try:
        yield Reference(base, config, tuner)
    finally:
        tuner.unload()  # the original modules back in place, the LoRA layers dropped
        base.model.requires_grad_(False)
