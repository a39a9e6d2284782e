"""The LM head, derived from the model and checked once against the model's own forward.

Hugging Face causal LMs compute `logits = post(lm_head(h_last))`, where `post` is the identity or one of a few
scalar maps: Cohere multiplies by `logit_scale`, Granite divides by `logits_scaling`, Gemma 2/3 soft-cap with
`tanh(x / c) * c`. `derive_head` reads those off the model and its config, then runs the model on a few tokens
and compares: a head whose logits differ from the model's is refused with an error naming the model class, so
no family is ever served or trained with wrong numbers. The subset path (logits for a few vocabulary ids, the
answer-position classification speed-up) applies the same post-processing to the same rows of the weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from softprompt.errors import InputError

CHECK_IDS = (1, 2, 3, 5, 8)  # a few token ids for the load-time check (taken modulo the vocabulary size)


@dataclass(frozen=True, eq=False)
class Head:
    """hidden [...,H] -> logits [...,V]: the model's own output module, then its scalar post-processing."""

    module: nn.Module
    """The model's output embedding (`get_output_embeddings()`), tied to the input embedding or not."""
    multiply: float | None = None
    """Cohere's `logit_scale`: logits * multiply."""
    divide: float | None = None
    """Granite's `logits_scaling`: logits / divide."""
    softcap: float | None = None
    """Gemma 2/3's `final_logit_softcapping`: tanh(logits / c) * c."""

    def __call__(self, hidden: torch.Tensor, vocab_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [...,V], or only the columns `vocab_ids` [K] -> [...,K] (same values as the full head's)."""
        if vocab_ids is None:
            return self.post(self.module(hidden))
        weight = getattr(self.module, "weight", None)
        if not isinstance(self.module, nn.Linear) or weight is None:
            return self.post(self.module(hidden))[..., vocab_ids]  # an unusual head: full logits, then the subset
        bias = self.module.bias[vocab_ids] if self.module.bias is not None else None
        return self.post(F.linear(hidden, weight[vocab_ids], bias))  # [...,K]

    def post(self, logits: torch.Tensor) -> torch.Tensor:
        """The model's scalar maps after the output projection, in the model's own order."""
        if self.multiply is not None:
            logits = logits * self.multiply
        if self.divide is not None:
            logits = logits / self.divide
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def _scalar(*sources: object, name: str) -> float | None:
    for src in sources:
        value = getattr(src, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def read_head(model: nn.Module) -> Head:
    """The head as the model's attributes and config describe it (not yet checked)."""
    module = model.get_output_embeddings()
    if module is None:
        raise InputError(f"{type(model).__name__} has no output embedding (get_output_embeddings() is None): "
                         "softprompt needs a causal LM with a language-model head (AutoModelForCausalLM)")
    cfg = model.config.get_text_config()
    divide = _scalar(cfg, name="logits_scaling")
    return Head(
        module=module,
        multiply=_scalar(model, cfg, name="logit_scale"),
        divide=None if divide == 1.0 else divide,
        softcap=_scalar(cfg, name="final_logit_softcapping") or None,
    )


def _tolerance(dtype: torch.dtype) -> float:
    return 1e-4 if dtype in (torch.float32, torch.float64) else 2e-2


@torch.no_grad()
def derive_head(model: nn.Module, backbone: nn.Module) -> Head:
    """Read the head off the model and check it on a few tokens against `model(...).logits`.

    Raises InputError (naming the model class and the size of the difference) when the model does something
    after its last hidden state that the head does not reproduce.
    """
    head = read_head(model)
    vocab = model.get_input_embeddings().weight.shape[0]
    dev = model.get_input_embeddings().weight.device
    ids = torch.tensor([CHECK_IDS], device=dev) % vocab  # [1,T]
    mask = torch.ones_like(ids)
    expected = model(input_ids=ids, attention_mask=mask, use_cache=False).logits  # [1,T,V]
    hidden = backbone(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state  # [1,T,H]
    subset = torch.arange(0, vocab, max(1, vocab // 7), device=dev)  # [K] a spread of columns
    got, got_subset = head(hidden), head(hidden, subset)
    if got.shape != expected.shape:
        raise InputError(f"{type(model).__name__}: its logits have shape {tuple(expected.shape)} but its output "
                         f"embedding gives {tuple(got.shape)}; this head cannot be reproduced (unsupported model)")
    scale = float(expected.abs().max()) or 1.0
    err = max(float((got - expected).abs().max()), float((got_subset - expected[..., subset]).abs().max()))
    if not err <= _tolerance(expected.dtype) * scale:
        raise InputError(
            f"{type(model).__name__} ({model.config.get_text_config().model_type}): the logits rebuilt from its "
            f"last hidden state differ from its own forward by {err:.3g} (largest logit {scale:.3g}); it does "
            "something after the last hidden state softprompt does not know (known: output projection with "
            "bias, logit_scale, logits_scaling, final_logit_softcapping). Unsupported model"
        )
    return head
