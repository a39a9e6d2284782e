"""Tiny random models of every supported architecture, built in code (nothing is downloaded).

Sizes follow transformers' LlamaModelTester: vocab 99, hidden 32, 2 layers, 4 heads.
The tokenizer is character-level so any text round-trips.
"""

from __future__ import annotations

import string
from functools import lru_cache

import torch

ARCHS = ("llama", "gpt2", "gemma3", "qwen2")
SPECIALS = ["<pad>", "<eos>", "<unk>"]
CHARS = list(string.ascii_letters + string.digits + " .,:;!?'\"-()\n/") + list("@#$%&*+=<>[]_{}|~^`\\")
VOCAB = (SPECIALS + CHARS)[:99]


@lru_cache(maxsize=1)
def tiny_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(VOCAB)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tk.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def tiny_word_tokenizer(words: tuple[str, ...] = ("positive", "negative")):
    """A fresh tiny_tokenizer (the cached one is shared) where each of `words`, after a space, is one token, as
    answer words are on real tokenizers (ids 99 and up: resize the model's embeddings to len(tokenizer))."""
    tok = tiny_tokenizer.__wrapped__()
    tok.add_tokens([" " + w for w in words])
    return tok


def tiny_model(arch: str = "llama", seed: int = 0, layers: int = 2, init_range: float = 0.02):
    """`init_range` > 0.02 gives peakier logits, so small training tasks can reach low loss."""
    import transformers as tf

    torch.manual_seed(seed)
    common = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, eos_token_id=1, bos_token_id=None,
                  initializer_range=init_range)
    if arch == "llama":
        m = tf.LlamaForCausalLM(tf.LlamaConfig(**common))
    elif arch == "qwen2":
        m = tf.Qwen2ForCausalLM(tf.Qwen2Config(**common))
    elif arch == "gemma3":
        cfg = tf.Gemma3TextConfig(**common, head_dim=16, sliding_window=64,
                                  layer_types=["sliding_attention", "full_attention"] * (layers // 2))
        m = tf.Gemma3ForCausalLM(cfg)
    elif arch == "gpt2":
        m = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=99, n_embd=32, n_layer=layers, n_head=4, n_positions=256,
                                             bos_token_id=1, eos_token_id=1, pad_token_id=0,
                                             initializer_range=init_range))
    else:
        raise ValueError(arch)
    return m.eval()


def tiny_base(arch: str = "llama", seed: int = 0, layers: int = 2, init_range: float = 0.02):
    import softprompt as sp

    return sp.load_base((tiny_model(arch, seed, layers, init_range), tiny_tokenizer()))
