"""The runner's soft-prefix cache is exact on every architecture: serving an input-embedding prompt as the K/V
prefix of its soft tokens gives the logits and tokens of splicing the soft tokens into the input."""

from __future__ import annotations

import pytest
import torch

import softprompt as sp
from softprompt.serving.runner import GREEDY, Runner
from tests.serving.conftest import make_prompt
from tests.tiny import ARCHS, tiny_base


@pytest.mark.parametrize("arch", ARCHS)
def test_soft_prefix_cache_is_exact(arch):
    base = tiny_base(arch)
    runner = Runner(base, soft_prefix_cache=True)
    ids = base.encode(["soft prefix", "a b c"])
    for method in ("prompt_tuning", "p_tuning"):
        p = make_prompt(base, method, seed=3, n=8)
        entry = runner.load(*p.to_bytes())
        assert entry.parts.kv is not None and entry.parts.embeds is None  # served as a K/V prefix
        ids_t, mask = sp.pad_batch(ids)
        with torch.no_grad():
            want = sp.forward_mixed(base, [p, None], ids_t, mask)
            got = sp.forward_mixed(base, [entry.parts, None], ids_t, mask)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        alone = sp.generate_ids(base, [p, p], ids, max_new_tokens=12)
        assert runner.generate([entry.parts, entry.parts], ids, 12, GREEDY) == alone


def test_embedding_only_runner_keeps_soft_tokens_as_inputs():
    base = tiny_base("llama")
    entry = Runner(base, soft_prefix_cache=False).load(*make_prompt(base, "prompt_tuning", seed=1, n=4).to_bytes())
    assert entry.parts.embeds is not None and entry.parts.kv is None
