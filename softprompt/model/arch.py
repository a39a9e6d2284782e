"""Where a decoder-only model keeps its parts, found by looking, and what softprompt refuses.

The decoder layers are the shallowest `nn.ModuleList` under the backbone with one entry per cached layer
(`model.layers` for Llama-likes, `transformer.h` for GPT-2/Bloom/Falcon, `gpt_neox.layers`, OPT's
`decoder.layers`). Encoder-decoder models and models whose cache holds recurrent state instead of keys and
values (Mamba and other state-space or hybrid models) are refused with the family named.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from softprompt.errors import InputError

ATTENTION_NAMES = ("self_attn", "self_attention", "attn", "attention")
"""Attention sub-module of a decoder layer (Llama-likes, Bloom/Falcon, GPT-2, GPT-NeoX)."""
MLP_NAMES = ("mlp", "feed_forward", "ffn", "fc2")
"""Feed-forward sub-module (OPT has no MLP module: its `fc2` output is the feed-forward output)."""


def family(model: nn.Module) -> str:
    """`ClassName (model_type)`, the way errors name a model."""
    return f"{type(model).__name__} ({getattr(model.config, 'model_type', '?')})"


def check_decoder_only(model: nn.Module) -> None:
    """Refuse what is not a decoder-only causal LM, before running it."""
    cfg = model.config
    if getattr(cfg, "is_encoder_decoder", False):
        raise InputError(f"{family(model)} is an encoder-decoder model: softprompt adapts decoder-only causal LMs "
                         "(AutoModelForCausalLM: Llama, Qwen, Gemma, GPT-2, OPT, ...)")
    if not hasattr(model, "get_output_embeddings") or not hasattr(model, "base_model"):
        raise InputError(f"{type(model).__name__} is not a Hugging Face causal LM (PreTrainedModel with a head)")


def check_kv_cache(model: nn.Module, cache: Any) -> None:
    """Every layer must cache keys and values (the K/V-prefix methods and serving build on them)."""
    layers = getattr(cache, "layers", None)
    if layers:
        odd = sorted({type(layer).__name__ for layer in layers if getattr(layer, "keys", None) is None})
    else:
        odd = [type(cache).__name__]  # no per-layer list at all (older transformers' MambaCache, or None)
    if odd:
        raise InputError(
            f"{family(model)} keeps no attention keys and values in its cache ({', '.join(odd)}): state-space "
            "and hybrid models (Mamba, RWKV, Jamba, ...) are not supported; use a transformer decoder "
            "(Llama, Qwen, Gemma, GPT-2, OPT, ...)"
        )


def decoder_layers(model: nn.Module, n: int) -> nn.ModuleList:
    """The backbone's list of `n` decoder layers: the shallowest ModuleList of that length."""
    found = [(name.count("."), name, mod) for name, mod in model.base_model.named_modules()
             if isinstance(mod, nn.ModuleList) and len(mod) == n]
    if not found:
        raise InputError(f"cannot find the {n} decoder layers of {family(model)}: no list of {n} modules under "
                         f"its backbone {type(model.base_model).__name__}; unsupported architecture")
    return min(found, key=lambda f: f[0])[2]


def site_module(layer: nn.Module, site: str) -> nn.Module:
    """A decoder layer's attention ("attn") or feed-forward ("mlp") sub-module."""
    for name in ATTENTION_NAMES if site == "attn" else MLP_NAMES:
        if isinstance(getattr(layer, name, None), nn.Module):
            return getattr(layer, name)
    raise InputError(f"{type(layer).__name__} has no {site} sub-module (looked for "
                     f"{', '.join(ATTENTION_NAMES if site == 'attn' else MLP_NAMES)}): adapters cannot attach here")
