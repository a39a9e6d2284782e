"""Numeric parity: every method equals a plain, naive computation on the unmodified Hugging Face model.

Each reference below is written out by hand on `base.model` (inputs_embeds, a K/V cache, our own
hooks); none reuses the library's injection code. fp32, atol=1e-5.

This module also holds the method table the other suites share (`CONFIGS`, `make_prompt`, `row_ids`):
one entry per registered method (and per variant that changes the code path).
"""

from __future__ import annotations

from functools import cache

import pytest
import torch
import torch.nn.functional as F
from transformers import DynamicCache

import softprompt as sp
from softprompt import registry
from softprompt.model.compat import cache_kw
from tests.tiny import tiny_base

ATOL = 1e-5

CONFIGS = {
    "prompt_tuning": sp.PromptTuningConfig(num_virtual_tokens=3, init="random", seed=1),
    "prefix_tuning": sp.PrefixTuningConfig(num_virtual_tokens=2, init="vocab"),
    "prefix_tuning_reparam": sp.PrefixTuningConfig(num_virtual_tokens=3, reparameterize=True, reparam_hidden=16),
    "deep_prompt": sp.DeepPromptConfig(num_virtual_tokens=4, init="random"),
    "p_tuning_mlp": sp.PTuningConfig(num_virtual_tokens=3, encoder="mlp", encoder_hidden=16),
    "p_tuning_lstm": sp.PTuningConfig(num_virtual_tokens=2, encoder="lstm", encoder_hidden=16),
    "adapter": sp.AdapterConfig(bottleneck=4),
}
if "hybrid" in registry.names():
    CONFIGS["hybrid"] = registry.get("hybrid").config_cls(template="{soft:2}{text}{soft:1}")
METHODS = tuple(CONFIGS)


@cache
def shared_base(arch: str) -> sp.Base:
    """One frozen tiny base per architecture for read-only tests (never train or mutate it)."""
    return tiny_base(arch)


def make_prompt(base: sp.Base, name: str, seed: int = 0) -> sp.Prompted:
    """A prompt whose every parameter is moved off its initialisation, like a trained one.

    Adapters start as the identity and P-tuning's encoder head starts at zero: the noise makes both
    actually change the model, so a test that ignored them would fail.
    """
    p = sp.attach(base, CONFIGS[name])
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for q in p.parameters():
            scale = float(q.abs().mean()) or 0.5
            q.add_(torch.randn(q.shape, generator=g).to(q.device) * 0.2 * scale)
    return p


@cache
def shared_prompt(arch: str, name: str, seed: int = 0) -> sp.Prompted:
    return make_prompt(shared_base(arch), name, seed)


def row_ids(prompt: sp.Prompted | None, tokens: list[int]) -> list[int]:
    """The token ids a row carries for `prompt`: prompts with soft slots (hybrid templates) get their
    placeholders -(k+1) around the text, as a rendered template would place them."""
    if prompt is None or prompt.parts().slots is None:
        return list(tokens)
    k = prompt.parts().slots.shape[0]
    return [-(i + 1) for i in range(k - 1)] + list(tokens) + [-k]


def rand_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Ordinary (non-special) token ids [batch, length]."""
    return torch.randint(3, 99, (batch, length), generator=torch.Generator().manual_seed(seed))


def assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=0)


def assert_changes(logits: torch.Tensor, base: sp.Base, ids: torch.Tensor) -> None:
    """The prompt has a visible effect (so a parity test that ignored it would fail)."""
    plain = base.model(input_ids=ids).logits
    assert (logits - plain).abs().max() > 1e-3


# --- hand-written references -------------------------------------------------------------------------


LAYER_PATHS = ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers")
"""Where each tested family keeps its decoder layers, written out by hand (not the library's discovery)."""


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    for path in LAYER_PATHS:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise AssertionError(f"no decoder layers of {type(model).__name__} at {LAYER_PATHS}")


def site_module(layer: torch.nn.Module, site: str) -> torch.nn.Module:
    """The adapted sub-module: attention, or the feed-forward (OPT: its second projection `fc2`)."""
    names = ("mlp", "fc2") if site == "mlp" else ("self_attn", "self_attention", "attn", "attention")
    return next(getattr(layer, n) for n in names if hasattr(layer, n))


@torch.no_grad()
def ref_inputs_embeds(base: sp.Base, prefix: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Plain model on inputs_embeds = [prefix ; E(x)], logits at the x positions. prefix [n,H], ids [B,L]."""
    n = prefix.shape[0]
    e = base.model.get_input_embeddings()(ids)  # [B,L,H], the embedding module's output (Gemma: scaled)
    x = torch.cat([prefix[None].expand(ids.shape[0], -1, -1), e], dim=1)  # [B,n+L,H]
    return base.model(inputs_embeds=x).logits[:, n:]


@torch.no_grad()
def ref_past_kv(base: sp.Base, keys: torch.Tensor, values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Plain model fed a K/V cache = (keys, values) [Ly,kvh,n,hd], positions n..n+L-1."""
    B, L = ids.shape
    n = keys.shape[2]
    cache = DynamicCache(config=base.model.config)
    for layer in range(keys.shape[0]):
        cache.update(keys[layer][None].expand(B, -1, -1, -1), values[layer][None].expand(B, -1, -1, -1), layer)
    return base.model(input_ids=ids, attention_mask=torch.ones(B, n + L, dtype=torch.long),
                      position_ids=torch.arange(n, n + L)[None].expand(B, -1), **cache_kw(base.model, cache)).logits


@torch.no_grad()
def ref_deep_naive(base: sp.Base, states: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Literal deep prompt tuning: layer l's input is [P_l ; H_(l-1)[user positions]]. states [Ly,n,H]."""
    n = states.shape[1]

    def replace_prefix(p_l: torch.Tensor):
        def pre(_mod, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            h = torch.cat([p_l[None].expand(h.shape[0], -1, -1), h[:, n:]], dim=1)  # drop prefix outputs
            return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

        return pre

    layers = decoder_layers(base.model)
    handles = [layers[i].register_forward_pre_hook(replace_prefix(states[i]), with_kwargs=True)
               for i in range(1, len(layers))]
    try:
        return ref_inputs_embeds(base, states[0], ids)
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def ref_adapter(base: sp.Base, tensors: dict[str, torch.Tensor], sites: tuple[str, ...],
                ids: torch.Tensor) -> torch.Tensor:
    """Plain model with h <- h + up(gelu(down(h))) added by our own hooks after each adapted sub-module."""

    def add_bottleneck(layer: int, s: int):
        def hook(_mod, _args, out):
            h = out[0] if isinstance(out, tuple) else out
            z = F.gelu(h @ tensors["down_w"][layer, s] + tensors["down_b"][layer, s])  # [B,T,r]
            h = h + z @ tensors["up_w"][layer, s] + tensors["up_b"][layer, s]  # [B,T,H]
            return (h, *out[1:]) if isinstance(out, tuple) else h

        return hook

    handles = [site_module(layer, site).register_forward_hook(add_bottleneck(i, s))
               for i, layer in enumerate(decoder_layers(base.model)) for s, site in enumerate(sites)]
    try:
        return base.model(input_ids=ids).logits
    finally:
        for h in handles:
            h.remove()


# --- the suite ------------------------------------------------------------------------------------------


def test_method_table_covers_every_registered_method():
    assert {type(c).method for c in CONFIGS.values()} == set(registry.names())


def test_prompt_tuning_equals_plain_model_on_spliced_embeddings(arch):
    base = shared_base(arch)
    p = shared_prompt(arch, "prompt_tuning")
    ids = rand_ids(2, 6)
    with torch.no_grad():
        out = p(ids)
    assert_close(out, ref_inputs_embeds(base, p.prompt.embeds.detach(), ids))
    assert_changes(out, base, ids)


@pytest.mark.parametrize("name", ["prefix_tuning", "prefix_tuning_reparam"])
def test_prefix_tuning_equals_plain_model_fed_the_kv(arch, name):
    base = shared_base(arch)
    p = shared_prompt(arch, name)
    ids = rand_ids(2, 6)
    with torch.no_grad():
        out = p(ids)
        keys, values = p.prompt.kv()
        f = base.facts
        assert keys.shape == values.shape == (f.num_layers, f.kv_heads, CONFIGS[name].num_virtual_tokens, f.head_dim)
    assert_close(out, ref_past_kv(base, keys, values, ids))
    assert_changes(out, base, ids)


def test_deep_prompt_equals_naive_concatenate_and_drop(arch):
    base = shared_base(arch)
    p = shared_prompt(arch, "deep_prompt")
    ids = rand_ids(2, 6)
    states = p.prompt.states.detach()
    assert states.shape == (base.facts.num_layers, CONFIGS["deep_prompt"].num_virtual_tokens, base.facts.hidden_size)
    with torch.no_grad():
        out = p(ids)
    assert_close(out, ref_deep_naive(base, states, ids))
    assert_changes(out, base, ids)
    # every layer's P_l matters, not only the input one
    only_input = states.clone()
    only_input[1:] = 0
    assert (ref_deep_naive(base, only_input, ids) - out).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["p_tuning_mlp", "p_tuning_lstm"])
def test_p_tuning_equals_plain_model_on_its_produced_embeddings(arch, name):
    base = shared_base(arch)
    p = shared_prompt(arch, name)
    ids = rand_ids(2, 6)
    with torch.no_grad():
        produced = p.prompt.embeds()
        out = p(ids)
    assert not torch.allclose(produced, p.prompt.inputs), "the encoder should change the inputs"
    assert_close(out, ref_inputs_embeds(base, produced, ids))
    assert_changes(out, base, ids)


def test_adapter_equals_bottleneck_added_by_hand(arch):
    base = shared_base(arch)
    p = shared_prompt(arch, "adapter")
    ids = rand_ids(2, 6)
    tensors = {k: v.detach() for k, v in p.prompt.export_tensors().items()}
    assert tensors["up_w"].abs().max() > 0
    with torch.no_grad():
        out = p(ids)
    assert_close(out, ref_adapter(base, tensors, p.config.sites, ids))
    assert_changes(out, base, ids)
    # one site only: the other site's weights must not be used
    p_mlp = sp.attach(base, sp.AdapterConfig(bottleneck=4, sites=("mlp",)))
    mlp_only = {k: v[:, 1:] for k, v in tensors.items()}  # [L,1,...]: the "mlp" site of the two
    with torch.no_grad():
        for k, v in mlp_only.items():
            getattr(p_mlp.prompt, k).copy_(v)
        assert_close(p_mlp(ids), ref_adapter(base, mlp_only, ("mlp",), ids))


@pytest.mark.skipif("hybrid" not in CONFIGS, reason="no hybrid method registered")
def test_hybrid_slots_equal_plain_model_on_substituted_embeddings(arch):
    base = shared_base(arch)
    p = shared_prompt(arch, "hybrid")
    slots = p.parts().slots.detach()  # [K,H]
    x = rand_ids(1, 6)[0].tolist()
    ids = torch.tensor([row_ids(p, x)])
    with torch.no_grad():
        out = p(ids)
        e = base.model.get_input_embeddings()(ids.clamp(min=0))[0]  # [T,H]
        for col, tok in enumerate(ids[0].tolist()):
            if tok < 0:
                e[col] = slots[-tok - 1]
        ref = base.model(inputs_embeds=e[None]).logits
    assert_close(out, ref)
    assert (out - base.model(input_ids=ids.clamp(min=3)).logits).abs().max() > 1e-3


TEXT_INITS = [sp.PromptTuningConfig, sp.PTuningConfig, sp.PrefixTuningConfig, sp.DeepPromptConfig]
LONG_TEXT = "A soft prompt can be longer than a sliding attention window, 70 chars!"  # Gemma-3's window: 64


@pytest.mark.parametrize("text", ["hello", LONG_TEXT], ids=["short", "long"])
@pytest.mark.parametrize("config_cls", TEXT_INITS, ids=lambda c: c.method)
def test_text_init_equals_the_hard_text_prompt(arch, config_cls, text):
    """A soft prompt initialised from a text is, before training, exactly that text as a hard prompt."""
    base = shared_base(arch)
    text_ids = base.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(text_ids) == len(text)
    p = sp.attach(base, config_cls(num_virtual_tokens=len(text_ids), init="text", init_text=text))
    ids = rand_ids(2, 6, seed=3)
    with torch.no_grad():
        out = p(ids)
        hard = torch.cat([torch.tensor([text_ids] * 2), ids], dim=1)
        ref = base.model(input_ids=hard).logits[:, len(text_ids):]
    assert_close(out, ref)
    assert_changes(out, base, ids)


@pytest.mark.parametrize("init", sp.PromptTuningConfig.inits)
@pytest.mark.parametrize("config_cls", TEXT_INITS, ids=lambda c: c.method)
def test_every_init_works_on_every_arch(arch, config_cls, init):
    base = shared_base(arch)
    config = config_cls(num_virtual_tokens=3, init=init, init_text="hi", init_labels=("good", "bad"))
    p = sp.attach(base, config)
    assert all(torch.isfinite(q).all() for q in p.parameters())
    with torch.no_grad():
        assert torch.isfinite(p(rand_ids(1, 4))).all()
