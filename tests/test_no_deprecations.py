"""No deprecated transformers or torch call anywhere on the model path: loading, every method's forward and
backward, mixed batches, generation with and without the cache, PEFT export/import, on every tested family.

transformers reports deprecations two ways: `warnings.warn(..., FutureWarning)` for renamed arguments and its
logger (`warning_once`, "... is deprecated ...") for renamed output fields. Both fail this test.
"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

import softprompt as sp
from tests.families import NAMES, family_model
from tests.test_exactness import METHODS, make_prompt, row_ids
from tests.tiny import tiny_tokenizer


class _Deprecations(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "deprecat" in msg.lower():
            self.messages.append(msg)


@pytest.fixture
def strict():
    """Deprecation warnings raise; transformers' logged deprecations are collected (and must stay empty)."""
    from transformers.utils import logging as hf_logging

    hf_logging.warning_once.cache_clear()  # a notice already shown once would otherwise stay silent
    handler = _Deprecations()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            yield handler
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("family", NAMES)
def test_every_method_runs_without_a_deprecated_call(family, strict, tmp_path):
    base = sp.load_base((family_model(family), tiny_tokenizer()))
    prompts = [make_prompt(base, n) for n in METHODS]
    rows = [row_ids(p, [5 + i, 6, 7, 8][: 1 + i % 4]) for i, p in enumerate(prompts)]
    ids, mask = sp.pad_batch(rows)
    logits = sp.forward_mixed(base, prompts + [None], torch.cat([ids, ids[:1].clamp(min=3)]),
                              torch.cat([mask, mask[:1]]))
    logits[mask.bool().nonzero(as_tuple=True)].float().logsumexp(-1).sum().backward()  # a training step's path
    assert all(q.grad is not None for p in prompts for q in p.parameters())
    for use_cache in (True, False):
        out = sp.generate_ids(base, prompts, rows, max_new_tokens=3, use_cache=use_cache, eos_token_id=[])
        assert [len(t) for t in out] == [3] * len(prompts)
    from softprompt.interop import export_peft, import_peft

    for name in ("prompt_tuning", "prefix_tuning"):
        p = prompts[METHODS.index(name)]
        import_peft(export_peft(p, tmp_path / name), base)(ids.clamp(min=0), mask)
    assert strict.messages == [], strict.messages


def test_the_check_catches_both_kinds_of_deprecation(strict):
    """The old argument name raises here, and reading the old output field is collected (on transformers that
    deprecate them); so the test above would fail on a deprecated call."""
    import transformers
    from packaging.version import Version
    from transformers import DynamicCache

    if Version(transformers.__version__) < Version("5.24"):
        pytest.skip("past_key_values is not deprecated before transformers 5.24")
    model = family_model("llama")
    ids = torch.tensor([[5, 6]])
    with pytest.raises(FutureWarning, match="past_key_values"):
        model(input_ids=ids, past_key_values=DynamicCache(), use_cache=True)
    assert model(input_ids=ids, use_cache=True).past_key_values is not None
    assert any("past_key_values" in m for m in strict.messages)
