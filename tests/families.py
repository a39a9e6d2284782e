"""Tiny random models of many Hugging Face causal-LM families, built in code (nothing is downloaded).

Sizes follow transformers' model testers: vocab 99, hidden 32, 2 layers, 4 heads (2 key/value heads where the
family has grouped-query attention). Each family sets the knobs that make it differ from Llama (scaled or
soft-capped logits, sliding windows, learned positions, ALiBi, parallel residuals, projections around the
decoder, mixtures of experts) to values that change the numbers, so a head or layout that ignored one fails.
"""

from __future__ import annotations

from typing import Any

import torch

COMMON = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, pad_token_id=0, eos_token_id=1, bos_token_id=None, max_position_embeddings=256)
MHA = {k: v for k, v in COMMON.items() if k != "num_key_value_heads"}
SLIDING = ["sliding_attention", "full_attention"]

# family -> (config class name in transformers, config keyword arguments)
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", COMMON),
    "mistral": ("MistralConfig", {**COMMON, "sliding_window": 64}),
    "mixtral": ("MixtralConfig", {**COMMON, "intermediate_size": 16, "num_local_experts": 4, "num_experts_per_tok": 2}),
    "qwen2": ("Qwen2Config", COMMON),
    "qwen3": ("Qwen3Config", {**COMMON, "head_dim": 16}),
    "qwen3_moe": ("Qwen3MoeConfig", {**COMMON, "head_dim": 8, "num_experts": 4, "num_experts_per_tok": 2,
                                     "moe_intermediate_size": 16, "decoder_sparse_step": 1}),
    "gemma": ("GemmaConfig", {**COMMON, "head_dim": 8}),
    "gemma2": ("Gemma2Config", {**COMMON, "head_dim": 16, "sliding_window": 64, "query_pre_attn_scalar": 16,
                                "final_logit_softcapping": 3.0, "attn_logit_softcapping": 5.0,
                                "layer_types": SLIDING}),
    "gemma3": ("Gemma3TextConfig", {**COMMON, "head_dim": 16, "sliding_window": 64, "layer_types": SLIDING,
                                    "final_logit_softcapping": 3.0}),
    "phi": ("PhiConfig", {**COMMON, "partial_rotary_factor": 0.5}),
    "phi3": ("Phi3Config", COMMON),
    "gpt2": ("GPT2Config", dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=256, pad_token_id=0,
                                bos_token_id=1, eos_token_id=1)),
    "gpt_neox": ("GPTNeoXConfig", {**MHA, "rotary_pct": 0.5, "use_parallel_residual": True}),
    "falcon": ("FalconConfig", dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    pad_token_id=0, eos_token_id=1, bos_token_id=None, multi_query=True,
                                    parallel_attn=True, alibi=False)),
    "olmo2": ("Olmo2Config", COMMON),
    "stablelm": ("StableLmConfig", {**COMMON, "partial_rotary_factor": 0.5}),
    "starcoder2": ("Starcoder2Config", {**COMMON, "sliding_window": 64}),
    "smollm3": ("SmolLM3Config", {**COMMON, "no_rope_layer_interval": 2}),
    "bloom": ("BloomConfig", dict(vocab_size=99, hidden_size=32, n_layer=2, n_head=4, pad_token_id=0,
                                  eos_token_id=1, bos_token_id=None)),
    "cohere": ("CohereConfig", {**COMMON, "logit_scale": 0.25}),
    "granite": ("GraniteConfig", {**COMMON, "logits_scaling": 4.0, "embedding_multiplier": 2.0,
                                  "residual_multiplier": 0.5, "attention_multiplier": 0.25}),
    "opt": ("OPTConfig", dict(vocab_size=99, hidden_size=32, ffn_dim=37, num_hidden_layers=2, num_attention_heads=4,
                              max_position_embeddings=256, dropout=0.0, pad_token_id=0,
                              eos_token_id=1, bos_token_id=1)),
}
# the 5.0 configs accept rope/rotary knobs under other names in some families: drop what a version rejects
NAMES = tuple(FAMILIES)


def family_model(family: str, seed: int = 0, init_range: float = 0.2) -> torch.nn.Module:
    """A tiny random causal LM of `family`. `init_range` 0.2 gives logits of order one, so a missed
    scale or soft-cap in the head changes them well beyond the test tolerance."""
    import transformers as tf

    cls_name, kwargs = FAMILIES[family]
    cfg = getattr(tf, cls_name)(**kwargs)
    cfg.initializer_range = cfg.init_std = init_range
    torch.manual_seed(seed)
    return tf.AutoModelForCausalLM.from_config(cfg).eval()


def family_base(family: str, seed: int = 0):
    import softprompt as sp
    from tests.tiny import tiny_tokenizer

    return sp.load_base((family_model(family, seed), tiny_tokenizer()))
