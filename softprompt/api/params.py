"""Validation of OpenAI-style request fields, each with a clear message naming the field and the bound."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from softprompt.errors import InputError
from softprompt.serving.config import ServeConfig
from softprompt.serving.runner import Sampling

MAX_STOPS = 4
MAX_STOP_CHARS = 64


def _number(body: dict, name: str, lo: float, hi: float, default: float | None) -> float | None:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise InputError(f"{name}={v!r}: must be a number in [{lo}, {hi}]")
    return float(v)


def _int(body: dict, name: str, lo: int, hi: int, default: int | None, hint: str = "") -> int | None:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise InputError(f"{name}={v!r}: must be an integer in [{lo}, {hi}]{hint}")
    return v


@dataclass(frozen=True)
class GenParams:
    max_tokens: int
    sampling: Sampling
    seed: int | None
    stop: tuple[str, ...]
    n: int
    stream: bool
    include_usage: bool


def gen_params(body: dict[str, Any], cfg: ServeConfig, *, chat: bool) -> GenParams:
    names = ("max_completion_tokens", "max_tokens") if chat else ("max_tokens",)
    name = next((n for n in names if body.get(n) is not None), "max_tokens")
    max_tokens = _int(body, name, 1, cfg.max_tokens_limit, cfg.default_max_tokens,
                      f" (this server's limit is {cfg.max_tokens_limit})")
    temperature = _number(body, "temperature", 0.0, 2.0, 1.0)
    top_p = _number(body, "top_p", 0.0, 1.0, 1.0)
    if top_p == 0.0:
        raise InputError("top_p=0: must be > 0 (use temperature=0 for greedy decoding)")
    seed = _int(body, "seed", -(2**63), 2**63 - 1, None)
    n = _int(body, "n", 1, cfg.max_prompts_per_request, 1)
    stop = body.get("stop")
    stops: tuple[str, ...] = ()
    if stop is not None:
        stops = (stop,) if isinstance(stop, str) else tuple(stop) if isinstance(stop, list) else ()
        ok = (isinstance(stop, (str, list)) and len(stops) <= MAX_STOPS
              and all(isinstance(s, str) and 1 <= len(s) <= MAX_STOP_CHARS for s in stops))
        if not ok:
            raise InputError(f"stop: must be a string or a list of at most {MAX_STOPS} non-empty strings of at most "
                             f"{MAX_STOP_CHARS} characters")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InputError(f"stream={stream!r}: must be true or false")
    opts = body.get("stream_options") or {}
    include_usage = bool(isinstance(opts, dict) and opts.get("include_usage"))
    for unsupported in ("logprobs", "top_logprobs", "echo", "suffix", "tools", "functions"):
        if body.get(unsupported) not in (None, False, [], 0):
            raise InputError(f"{unsupported} is not supported by this server; leave it out")
    if body.get("best_of") not in (None, 1):
        raise InputError("best_of is not supported by this server; leave it out")
    return GenParams(max_tokens, Sampling.make(temperature, top_p), seed, stops, n, stream, include_usage)


def completion_prompts(body: dict[str, Any], cfg: ServeConfig) -> list[str]:
    p = body.get("prompt")
    prompts = [p] if isinstance(p, str) else p
    if not isinstance(prompts, list) or not prompts or not all(isinstance(x, str) for x in prompts):
        raise InputError("prompt: must be a non-empty string or a list of strings")
    if len(prompts) > cfg.max_prompts_per_request:
        raise InputError(f"prompt: {len(prompts)} prompts; this server takes at most {cfg.max_prompts_per_request} "
                         "per request")
    return prompts


def chat_messages(body: dict[str, Any]) -> list[dict[str, str]]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise InputError("messages: must be a non-empty list of {role, content}")
    out = []
    for i, m in enumerate(msgs):
        role = m.get("role") if isinstance(m, dict) else None
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str)
                       for c in content):
                raise InputError(f"messages[{i}].content: only text parts are supported")
            content = "".join(c["text"] for c in content)
        if role not in ("system", "developer", "user", "assistant") or not isinstance(content, str):
            raise InputError(f"messages[{i}]: needs role in system/user/assistant and a string content")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def check_prompt_ids(ids: list[int], cfg: ServeConfig, what: str = "prompt") -> list[int]:
    if not ids:
        raise InputError(f"{what} is empty: send at least one token of text")
    if len(ids) > cfg.max_prompt_tokens:
        raise InputError(f"{what} has {len(ids)} tokens; this server accepts at most {cfg.max_prompt_tokens}")
    return ids


def safe_text(text: str, stops: tuple[str, ...]) -> str:
    """The part of `text` that can be streamed: before any stop string and any partial stop string at the end,
    and not ending in a half-decoded character."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    text = text[:cut]
    hold = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                hold = max(hold, k)
                break
    text = text[:len(text) - hold]
    return text.rstrip("\ufffd")
