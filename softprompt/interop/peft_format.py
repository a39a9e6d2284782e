"""Hugging Face PEFT adapters <-> softprompt prompts (prompt tuning, P-tuning, prefix tuning).

PEFT stores every prompt-learning adapter as one tensor, `prompt_embeddings`, in `adapter_model.safetensors`,
next to `adapter_config.json` (peft `tuners/tuners_utils.py` BasePromptEncoder._get_adapter_state_dict):

    PROMPT_TUNING  [n, H]                   the soft prompt itself
    P_TUNING       [n, H]                   the prompt encoder's OUTPUT (peft_model.py get_prompt_embedding_to_save
                                            runs the encoder at save time; a model loaded for inference uses the
                                            tensor directly, peft_model.py get_prompt `inference_mode` branch)
    PREFIX_TUNING  [n, L*2*kvh*hd]          per token, laid out (layer, key/value, kv head, head_dim): get_prompt
                                            views it as [B, n, L*2, kvh, hd] and permutes to [L*2, B, kvh, n, hd],
                                            then splits pairs (layer l = rows 2l (keys), 2l+1 (values)).
                                            For grouped-query models PEFT sets num_attention_heads = kv heads and
                                            token_dim = kv_heads * head_dim (utils/other.py
                                            _prepare_prompt_learning_config, "For grouped-query attention").

Nothing here imports peft: the files are written and read as JSON + safetensors. Only safetensors is read;
`adapter_model.bin` (a pickle) is refused. File and line references are to peft 0.21.2.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from softprompt import registry
from softprompt.artifacts.io import read_json, safetensors_header, write_files
from softprompt.config import Knobs
from softprompt.errors import ArtifactError, InputError
from softprompt.model.base import Base
from softprompt.prompted import Prompted

log = logging.getLogger(__name__)

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_NAMES = ("adapter_model.bin", "adapter_model.pt", "adapter_model.pth")
KEY = "prompt_embeddings"
MAX_CONFIG_BYTES = 1 << 20
DTYPES = {"F32", "BF16", "F16"}

# softprompt method -> PEFT peft_type; and back (P-tuning's saved tensor is a plain soft prompt)
PEFT_TYPE = {"prompt_tuning": "PROMPT_TUNING", "p_tuning": "P_TUNING", "prefix_tuning": "PREFIX_TUNING"}
IMPORT_METHOD = {"PROMPT_TUNING": "prompt_tuning", "P_TUNING": "prompt_tuning", "PREFIX_TUNING": "prefix_tuning"}


# --- tensor layouts ---------------------------------------------------------------------------------------

def kv_to_peft(keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """keys, values [L,kvh,n,hd] -> PEFT's flat prefix [n, L*2*kvh*hd] (layer, k/v, head, dim order)."""
    L, kvh, n, hd = keys.shape
    kv = torch.stack([keys, values], dim=1)  # [L,2,kvh,n,hd]
    return kv.permute(3, 0, 1, 2, 4).reshape(n, L * 2 * kvh * hd).contiguous()  # [n,L,2,kvh,hd] -> flat


def peft_to_kv(flat: torch.Tensor, num_layers: int, kv_heads: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """PEFT's flat prefix [n, L*2*kvh*hd] -> (keys, values), each [L,kvh,n,hd]."""
    n = flat.shape[0]
    kv = flat.reshape(n, num_layers, 2, kv_heads, head_dim).permute(2, 1, 3, 0, 4)  # [2,L,kvh,n,hd]
    return kv[0].contiguous(), kv[1].contiguous()


# --- export -----------------------------------------------------------------------------------------------

def _peft_config(prompted: Prompted, peft_type: str, n: int) -> dict[str, Any]:
    f = prompted.base.facts
    model_cfg = prompted.base.model.config.get_text_config()
    common = {
        "peft_type": peft_type,
        "task_type": "CAUSAL_LM",
        "inference_mode": True,
        "num_virtual_tokens": n,
        "num_transformer_submodules": 1,
        "num_layers": f.num_layers,
        "base_model_name_or_path": getattr(prompted.base.model.config, "_name_or_path", None) or None,
        "revision": None,
        "modules_to_save": None,
        "auto_mapping": None,
    }
    if peft_type == "PREFIX_TUNING":
        # K/V are stored already folded (no projection MLP); heads/token_dim describe the K/V cache shape
        return {**common, "token_dim": f.kv_heads * f.head_dim, "num_attention_heads": f.kv_heads,
                "encoder_hidden_size": f.kv_heads * f.head_dim, "prefix_projection": False, "init_weights": None}
    heads = getattr(model_cfg, "num_attention_heads", None) or getattr(model_cfg, "n_head", None)
    base = {**common, "token_dim": f.hidden_size, "num_attention_heads": heads}
    if peft_type == "P_TUNING":
        enc = prompted.config.encoder
        return {**base, "encoder_reparameterization_type": "LSTM" if enc == "lstm" else "MLP",
                "encoder_hidden_size": prompted.config.encoder_hidden, "encoder_num_layers": 2,
                "encoder_dropout": 0.0}
    return {**base, "prompt_tuning_init": "RANDOM", "prompt_tuning_init_text": None,
            "tokenizer_name_or_path": None, "tokenizer_kwargs": None}


def export_peft(prompted: Prompted, out_dir: str | Path) -> Path:
    """Write `prompted` as a PEFT adapter directory (adapter_config.json + adapter_model.safetensors).

    `PeftModel.from_pretrained(hf_model, out_dir)` then computes softprompt's logits at every real token
    (tests/test_interop.py: max abs diff 0.0 on tiny llama, gpt2, gemma3, qwen2) for prompt tuning, P-tuning and
    prefix tuning, unpadded or right-padded. Positions agree: for prefix tuning PEFT passes the prefix as a
    cache of length n, so transformers numbers the input from n (modeling_llama.py: arange + past_seen_tokens),
    and for prompt/P-tuning the prompt takes columns 0..n-1 of inputs_embeds; both are softprompt's convention.

    One semantic difference: left padding. softprompt packs each row so its soft tokens sit right before its
    first real token and positions count from there. PEFT prepends the prompt (or the all-ones prefix mask) in
    front of the whole padded row (peft 0.21.2 peft_model.py PeftModelForCausalLM.forward, ~L2133 mask concat,
    ~L2157 prefix cache, ~L2170 embeddings concat) and transformers numbers positions by column, since PEFT drops
    caller position_ids for prompt/P-tuning (peft_model.py _adjust_prompt_learning_kwargs ~L1668). So the pads
    sit between prompt and text in position space and left-padded rows get different logits; the test
    test_peft_left_padding_differs_only_by_positions shows position ids are the whole difference. For prefix
    tuning, passing `position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0)` to the PEFT model restores
    equality (PEFT adds n to caller position ids, ~L1671); for prompt/P-tuning PEFT discards them.

    P-tuning is written as PEFT writes its own: `prompt_embeddings` holds the encoder's output
    (peft_model.py get_prompt_embedding_to_save ~L744), used as-is at inference (get_prompt ~L923). Prefix tuning
    is written folded (prefix_projection false). PEFT loads prompt-learning adapters for inference only
    (from_pretrained refuses is_trainable=True, ~L555). Deep prompts and adapters have no PEFT equivalent.
    """
    method = prompted.method
    if method not in PEFT_TYPE:
        raise InputError(f"method {method!r} has no PEFT prompt-learning equivalent; "
                         f"export_peft supports {', '.join(PEFT_TYPE)}")
    peft_type = PEFT_TYPE[method]
    tensors = {k: v.detach().to("cpu", torch.float32) for k, v in prompted.prompt.export_tensors().items()}
    if peft_type == "PREFIX_TUNING":
        flat = kv_to_peft(tensors["keys"], tensors["values"])  # [n, L*2*kvh*hd]
    else:
        flat = tensors["embeds"].contiguous()  # [n, H]
    from safetensors.torch import save

    config = _peft_config(prompted, peft_type, flat.shape[0])
    return write_files(Path(out_dir), {
        WEIGHTS_NAME: save({KEY: flat}, metadata={"format": "pt"}),
        CONFIG_NAME: (json.dumps(config, indent=2, sort_keys=True) + "\n").encode(),
    })


# --- import -----------------------------------------------------------------------------------------------

def _read_config(path: Path) -> dict[str, Any]:
    cfg_path = path / CONFIG_NAME
    if not cfg_path.is_file():
        raise ArtifactError(f"{path}: no {CONFIG_NAME}; a PEFT adapter directory holds {CONFIG_NAME} "
                            f"and {WEIGHTS_NAME}")
    return read_json(cfg_path.read_bytes(), str(cfg_path), MAX_CONFIG_BYTES)


def _read_weights(path: Path) -> torch.Tensor:
    w = path / WEIGHTS_NAME
    if not w.is_file():
        pickles = [p for p in PICKLE_NAMES if (path / p).exists()]
        if pickles:
            raise ArtifactError(f"{path} holds {pickles[0]}, a pickle: only safetensors is accepted "
                                f"(pickles can run code when loaded). Re-save the adapter with "
                                f"save_pretrained(..., safe_serialization=True) to get {WEIGHTS_NAME}")
        raise ArtifactError(f"{path}: no {WEIGHTS_NAME}")
    blob = w.read_bytes()
    header = safetensors_header(blob, str(w))
    names = sorted(k for k in header if k != "__metadata__")
    if names != [KEY]:
        raise ArtifactError(f"{w} holds tensors {names}; a PEFT prompt-learning adapter holds only {KEY!r}")
    dtype = header[KEY].get("dtype") if isinstance(header[KEY], dict) else None
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ArtifactError(f"{w}: {KEY} has dtype {dtype!r}; use one of {sorted(DTYPES)}")
    from safetensors.torch import load

    try:
        t = load(blob)[KEY].float()
    except Exception as e:  # safetensors raises its own error types
        raise ArtifactError(f"{w} cannot be parsed as safetensors: {e}") from None
    if not torch.isfinite(t).all():
        raise ArtifactError(f"{w}: {KEY} holds NaN or inf values")
    return t


def _check(cfg: dict[str, Any], flat: torch.Tensor, base: Base, peft_type: str) -> list[str]:
    """Every mismatch between the adapter and `base`, at once."""
    f = base.facts
    n = cfg.get("num_virtual_tokens")
    out = []
    if cfg.get("num_transformer_submodules", 1) not in (1, None):
        out.append(f"num_transformer_submodules={cfg['num_transformer_submodules']}: only decoder-only (1) "
                   "adapters can be imported")
    if cfg.get("task_type") not in (None, "CAUSAL_LM"):
        out.append(f"task_type={cfg['task_type']!r}: only CAUSAL_LM adapters can be imported")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        out.append(f"num_virtual_tokens={n!r}: must be a positive integer")
    if cfg.get("num_layers") not in (None, f.num_layers):
        out.append(f"num_layers={cfg['num_layers']}: this base has {f.num_layers} layers")
    if peft_type == "PREFIX_TUNING":
        width = f.num_layers * 2 * f.kv_heads * f.head_dim
        if cfg.get("num_attention_heads") not in (None, f.kv_heads):
            out.append(f"num_attention_heads={cfg['num_attention_heads']}: this base's cache has {f.kv_heads} "
                       "key/value heads")
        if cfg.get("token_dim") not in (None, f.kv_heads * f.head_dim):
            out.append(f"token_dim={cfg['token_dim']}: this base's cache needs kv_heads*head_dim = "
                       f"{f.kv_heads * f.head_dim}")
    else:
        width = f.hidden_size
        if cfg.get("token_dim") not in (None, f.hidden_size):
            out.append(f"token_dim={cfg['token_dim']}: this base's hidden size is {f.hidden_size}")
    if isinstance(n, int) and not isinstance(n, bool) and tuple(flat.shape) != (n, width):
        out.append(f"{KEY} has shape {tuple(flat.shape)}; this base needs ({n}, {width})")
    return out


def import_peft(adapter_dir: str | Path, base: Base) -> Prompted:
    """Read a PEFT prompt-learning adapter (safetensors only) as a softprompt `Prompted` on `base`.

    PROMPT_TUNING and P_TUNING become prompt_tuning (PEFT saved P-tuning's encoder output, a plain soft
    prompt); PREFIX_TUNING becomes prefix_tuning. Shapes are checked against `base`; every problem is reported.
    A PEFT adapter records no fingerprint of its base model (only `base_model_name_or_path`), so an adapter
    trained on another model of the same shape is accepted: pass the base it was trained on.
    """
    path = Path(adapter_dir)
    if not path.is_dir():
        raise ArtifactError(f"{path}: no such PEFT adapter directory")
    cfg = _read_config(path)
    peft_type = cfg.get("peft_type")
    if not isinstance(peft_type, str) or peft_type not in IMPORT_METHOD:
        raise ArtifactError(f"{path / CONFIG_NAME}: peft_type={peft_type!r} is not a prompt-learning method "
                            f"softprompt reads; supported: {', '.join(IMPORT_METHOD)}")
    flat = _read_weights(path)
    problems = _check(cfg, flat, base, peft_type)
    if problems:
        raise ArtifactError(f"{path} does not fit this base model:\n" + "\n".join(f"  - {p}" for p in problems))
    method = IMPORT_METHOD[peft_type]
    n = cfg["num_virtual_tokens"]
    if peft_type == "PREFIX_TUNING":
        keys, values = peft_to_kv(flat, base.facts.num_layers, base.facts.kv_heads, base.facts.head_dim)
        tensors = {"keys": keys, "values": values}
    else:
        tensors = {"embeds": flat}
    spec = registry.get(method)
    config = registry.build_config(method, Knobs(num_virtual_tokens=n))
    tensors = {k: v.to(base.device) for k, v in tensors.items()}
    extra = {"imported_from": {"format": "peft", "peft_type": peft_type,
                               "base_model_name_or_path": cfg.get("base_model_name_or_path")}}
    log.debug("imported PEFT %s adapter from %s as %s", peft_type, path, method)
    return Prompted(base, spec.module_cls.from_tensors(config, tensors), extra)
