"""Serve embedding-only prompts on vLLM through its prompt-embeddings input (`vllm serve --enable-prompt-embeds`).

vLLM's OpenAI-compatible /v1/completions accepts `prompt_embeds`: base64 of a `torch.save`d tensor
[seq_len, hidden] (float32, bfloat16 or float16). The server decodes it with
`torch.load(..., weights_only=True)` (vllm `load_prompt_embeds` / `_load_and_validate_embed`; vllm's own client
helper is `vllm.utils.serial_utils.tensor2base64`) and feeds it to the model in place of the token embeddings,
at positions 0..seq_len-1. So a request for a soft prompt P [n,H] and a text x carries

    prompt_embeds = base64(torch.save([P ; E(x)]))      E = the base's embedding layer output (Gemma's scaling
                                                         included, as vLLM's own embed step applies it)

which is exactly softprompt's layout and position convention (soft tokens 0..n-1, the text from n).

About torch.save: the client serialises a tensor it built itself, for a server; softprompt never
`torch.load`s anything. Files written here are safetensors + JSON; the request bodies inside `requests.jsonl`
are for sending, never read back by softprompt.

Only methods that change nothing but the input embeddings can be served this way: prefix tuning, deep prompts
and adapters change keys/values or layers inside the model, which a prompt-embeddings request cannot carry.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from softprompt import registry
from softprompt.artifacts.io import write_files
from softprompt.errors import InputError
from softprompt.prompted import Prompted

FORMAT = "softprompt.vllm-embeds"
FORMAT_VERSION = 1
TENSORS = "soft_prompt.safetensors"
MANIFEST = "vllm_prompt.json"
REQUESTS = "requests.jsonl"
WIRE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def soft_prompt(prompted: Prompted) -> torch.Tensor:
    """The prompt's input-embedding vectors P [n,H] (float32, CPU); refuses methods vLLM cannot carry."""
    spec = registry.get(prompted.method)
    parts = prompted.parts()
    if parts.slots is not None:
        raise InputError("this prompt places soft vectors inside a template (soft slots); build the request "
                         "embeddings from the filled template yourself, vllm_request_payload only prepends P")
    if not spec.embedding_only or not parts.embedding_only or parts.embeds is None:
        raise InputError(
            f"method {prompted.method!r} changes more than the input embeddings (per-layer keys/values or "
            "adapter layers); vLLM prompt embeddings can only carry input embeddings. Serve it with softprompt's "
            "own server, or train a prompt_tuning / p_tuning prompt for vLLM")
    return parts.embeds.detach().to("cpu", torch.float32).contiguous()  # [n,H]


@torch.no_grad()
def request_embeds(prompted: Prompted, text: str, *, add_special_tokens: bool = True) -> torch.Tensor:
    """[P ; E(x)] as [n + len(x), H] float32: the soft prompt spliced before the text's token embeddings."""
    p = soft_prompt(prompted)  # [n,H]
    base = prompted.base
    ids = base.encode([text], add_special_tokens=add_special_tokens)[0]
    if not ids:
        raise InputError(f"text {text!r} encodes to no tokens; vLLM needs at least one position after the prompt")
    e = base.embed(torch.tensor([ids], device=base.device))[0].to("cpu", torch.float32)  # [len,H]
    return torch.cat([p, e], dim=0)  # [n+len,H]


def encode_prompt_embeds(embeds: torch.Tensor, dtype: str = "float32") -> str:
    """base64(torch.save(tensor)) as vLLM decodes it. The tensor is copied first so torch.save writes exactly
    its own [seq,H] storage (a view would serialise the whole storage it looks into)."""
    if dtype not in WIRE_DTYPES:
        raise InputError(f"dtype={dtype!r}: vLLM accepts {', '.join(WIRE_DTYPES)}")
    if embeds.dim() != 2:
        raise InputError(f"prompt embeddings must be [seq_len, hidden], got shape {tuple(embeds.shape)}")
    t = embeds.detach().to("cpu", WIRE_DTYPES[dtype]).contiguous().clone()
    buf = io.BytesIO()
    torch.save(t, buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def vllm_request_payload(prompted: Prompted, text: str, *, model: str | None = None, dtype: str = "float32",
                         add_special_tokens: bool = True, **params: Any) -> dict[str, Any]:
    """A JSON body for vLLM's POST /v1/completions: `prompt_embeds` = [P ; E(text)], encoded as vLLM expects.

    `model` is the name the vLLM server serves (default: the base's name); `params` are passed through
    (max_tokens, temperature, ...). With the `openai` client send `prompt=""` and
    `extra_body={"prompt_embeds": payload["prompt_embeds"]}`.
    """
    embeds = request_embeds(prompted, text, add_special_tokens=add_special_tokens)
    body: dict[str, Any] = {"model": model or prompted.base.name, "prompt_embeds": encode_prompt_embeds(embeds, dtype)}
    body.update(params)
    return body


def export_vllm_embeds(prompted: Prompted, out_dir: str | Path, texts: Sequence[str] | None = None, *,
                       model: str | None = None, dtype: str = "float32", max_tokens: int = 64) -> Path:
    """Write what a client of a `vllm serve --enable-prompt-embeds` server needs for this task.

    `out_dir` gets `soft_prompt.safetensors` ({"embeds": [n,H]} float32), `vllm_prompt.json` (how to build a
    request, the base's fingerprint) and, when `texts` are given, `requests.jsonl`: one ready /v1/completions
    body per text.
    """
    from safetensors.torch import save

    p = soft_prompt(prompted)
    base = prompted.base
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "method": prompted.method,
        "num_virtual_tokens": p.shape[0],
        "hidden_size": p.shape[1],
        "model": model or base.name,
        "base": base.fingerprint,
        "tensors": {"embeds": {"file": TENSORS, "shape": [p.shape[0], p.shape[1]], "dtype": "float32"}},
        "request": {
            "server": "vllm serve <base model> --enable-prompt-embeds",
            "endpoint": "POST /v1/completions",
            "field": "prompt_embeds",
            "build": "concat(embeds, embedding_layer(token_ids)) -> [n + len, hidden]; the embedding layer "
                     "output of the base model (Gemma: already scaled by sqrt(hidden)); token_ids from the base's "
                     "tokenizer with add_special_tokens=true; the soft prompt takes positions 0..n-1",
            "encoding": "base64 of torch.save(tensor), tensor float32/bfloat16/float16, shape [seq_len, hidden]",
            "python": "softprompt.interop.vllm_request_payload(prompted, text)",
        },
        "requests": REQUESTS if texts else None,
    }
    files = {
        TENSORS: save({"embeds": p}, metadata={"format": FORMAT}),
        MANIFEST: (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(),
    }
    if texts:
        lines = [json.dumps(vllm_request_payload(prompted, t, model=model, dtype=dtype, max_tokens=max_tokens))
                 for t in texts]
        files[REQUESTS] = ("\n".join(lines) + "\n").encode()
    return write_files(Path(out_dir), files)
