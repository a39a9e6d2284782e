"""Validation of OpenAI-style request fields, each with a clear message naming the field and the bound."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from softprompt.errors import InputError
from softprompt.serving.config import ServeConfig
from softprompt.serving.runner import Sampling

MAX_STOPS = 4
MAX_STOP_CHARS = 64
MIN_TEMPERATURE = 1e-2
"""A temperature in (0, MIN_TEMPERATURE) samples at MIN_TEMPERATURE (as vLLM does): dividing logits by 1e-40
overflows to inf and the sampling distribution to NaN. 0 is greedy decoding."""
MIN_TOP_P = 1e-6
"""A top_p in (0, MIN_TOP_P) keeps only the most likely token, like MIN_TOP_P does (1e-300 is 0 in float32)."""
NO_OP_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "logprobs": (None, False, 0), "top_logprobs": (None, 0), "echo": (None, False), "suffix": (None, ""),
    "tools": (None, []), "functions": (None, []), "tool_choice": (None, "none", "auto"), "best_of": (None, 1),
    "response_format": (None, {"type": "text"}),
    "logit_bias": (None, {}), "presence_penalty": (None, 0), "frequency_penalty": (None, 0),
}
"""OpenAI fields this server does not implement: refused with HTTP 400 unless absent or equal to their no-op
default (clients such as the openai package may send the defaults)."""


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
    if 0.0 < temperature < MIN_TEMPERATURE:
        temperature = MIN_TEMPERATURE
    top_p = _number(body, "top_p", 0.0, 1.0, 1.0)
    if top_p == 0.0:
        raise InputError("top_p=0: must be > 0 (use temperature=0 for greedy decoding)")
    top_p = max(top_p, MIN_TOP_P)
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
    refuse_unsupported(body)
    return GenParams(max_tokens, Sampling.make(temperature, top_p), seed, stops, n, stream, include_usage)


def _same(a: Any, b: Any) -> bool:
    """JSON equality that keeps types apart (True == 1 == 1.0 in Python, not here; 0 and 0.0 are equal)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def refuse_unsupported(body: dict[str, Any]) -> None:
    """HTTP 400 for any field of NO_OP_DEFAULTS set to something other than its no-op default."""
    for name, defaults in NO_OP_DEFAULTS.items():
        if name in body and not any(_same(body[name], d) for d in defaults):
            allowed = " or ".join(repr(d) for d in defaults if d is not None) or "null"
            raise InputError(f"{name}={_short(body[name])}: not supported by this server; leave it out (or send "
                             f"{allowed})")


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def check_fits(rows: int, cfg: ServeConfig) -> None:
    """A request of `rows` queued jobs that could never fit the queue is a 400 naming the limit, not a 429."""
    limit = min(cfg.max_prompts_per_request, cfg.max_queue)
    if rows > limit:
        which = "max_queue" if cfg.max_queue < cfg.max_prompts_per_request else "max_prompts_per_request"
        raise InputError(f"the request needs {rows} rows (prompts x n choices, or inputs to classify); this server "
                         f"takes at most {limit} per request ({which}={limit})")


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
