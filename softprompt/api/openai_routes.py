"""OpenAI-compatible endpoints: /v1/completions, /v1/chat/completions (with SSE streaming), /v1/classify,
/v1/models. `model` names a task: 'task', 'task@VERSION' or 'task@ALIAS' ('base' is the plain model)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Future
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from softprompt.api.errors import classify_error
from softprompt.api.params import (
    GenParams,
    chat_messages,
    check_fits,
    check_prompt_ids,
    completion_prompts,
    gen_params,
    safe_text,
)
from softprompt.api.state import ServerState, authenticate, read_json, resolve
from softprompt.errors import InputError
from softprompt.serving.classify import candidates
from softprompt.serving.engine import Job
from softprompt.serving.store import NO_PROMPT, PromptHandle

router = APIRouter()


def _state(request: Request) -> ServerState:
    return request.app.state.sp


@router.post("/v1/completions")
async def completions(request: Request) -> Any:
    state = _state(request)
    tenant = authenticate(request, state)
    body = await read_json(request)
    params = gen_params(body, state.config, chat=False)
    handle, name = resolve(request, state, tenant, body.get("model"))
    ids = [check_prompt_ids(state.runner.encode(p), state.config) for p in completion_prompts(body, state.config)]
    return await _generate(state, handle, name, ids, params, chat=False)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Any:
    state = _state(request)
    tenant = authenticate(request, state)
    body = await read_json(request)
    params = gen_params(body, state.config, chat=True)
    handle, name = resolve(request, state, tenant, body.get("model"))
    ids = [check_prompt_ids(state.runner.chat_ids(chat_messages(body)), state.config, "the conversation")]
    return await _generate(state, handle, name, ids, params, chat=True)


@router.post("/v1/classify")
async def classify(request: Request) -> Any:
    state = _state(request)
    tenant = authenticate(request, state)
    body = await read_json(request)
    handle, name = resolve(request, state, tenant, body.get("model"))
    if handle is None:
        raise InputError(f"classify needs a task with a verbalizer, not {NO_PROMPT!r}")
    inputs = body.get("input")
    inputs = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) for x in inputs):
        raise InputError("input: must be a non-empty string or a list of strings")
    if len(inputs) > state.config.max_prompts_per_request:
        raise InputError(f"input: {len(inputs)} texts; at most {state.config.max_prompts_per_request} per request")
    check_fits(len(inputs), state.config)
    extra = await asyncio.to_thread(state.extra, handle)
    tok = state.base.tokenizer
    cands = [candidates(extra, handle.task, text, tok) for text in inputs]
    for c in cands:
        check_prompt_ids(c.prefix, state.config, "the formatted input")
    futures = state.engine.submit([Job(handle, classify=c) for c in cands])
    results = await _gather(futures)
    data = [{"index": i, **r} for i, r in enumerate(results)]
    return {"object": "list", "model": name, "data": data,
            "usage": {"prompt_tokens": sum(len(c.prefix) for c in cands), "total_tokens": sum(len(c.prefix)
                                                                                             for c in cands)}}


@router.get("/v1/models")
async def models(request: Request) -> Any:
    state = _state(request)
    tenant = authenticate(request, state)
    now = int(time.time())
    ids = [NO_PROMPT]
    for t in state.store.list_tasks(tenant):
        ids += [t["task"]] + [f"{t['task']}@{a}" for a in sorted(t["aliases"])]
    return {"object": "list", "data": [{"id": i, "object": "model", "created": now, "owned_by": tenant} for i in ids]}


async def _gather(futures: list[Future]) -> list[Any]:
    return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))


def _jobs(handle: PromptHandle | None, ids: list[list[int]], p: GenParams) -> list[Job]:
    """One job per (prompt, choice); with a seed, job k samples with seed + k, so choices differ and a request's
    text does not depend on which other requests share its batch."""
    rows = [row for row in ids for _ in range(p.n)]
    return [Job(handle, row, p.max_tokens, p.sampling, p.stop, seed=None if p.seed is None else p.seed + k)
            for k, row in enumerate(rows)]


async def _generate(state: ServerState, handle: PromptHandle | None, name: str, ids: list[list[int]],
                    p: GenParams, *, chat: bool) -> Any:
    check_fits(len(ids) * p.n, state.config)
    jobs = _jobs(handle, ids, p)
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    usage_prompt = sum(len(r) for r in ids)
    if p.stream:
        return _stream(state, jobs, rid, name, p, chat, usage_prompt)
    results = await _gather(state.engine.submit(jobs))
    choices = []
    for i, r in enumerate(results):
        c: dict[str, Any] = {"index": i, "finish_reason": r.finish_reason, "logprobs": None}
        if chat:
            c["message"] = {"role": "assistant", "content": r.text}
        else:
            c["text"] = r.text
        choices.append(c)
    n_out = sum(len(r.tokens) for r in results)
    return {"id": rid, "object": "chat.completion" if chat else "text_completion", "created": int(time.time()),
            "model": name, "choices": choices,
            "usage": {"prompt_tokens": usage_prompt, "completion_tokens": n_out, "total_tokens": usage_prompt + n_out}}


def _stream(state: ServerState, jobs: list[Job], rid: str, name: str, p: GenParams, chat: bool,
            usage_prompt: int) -> StreamingResponse:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def push(item: tuple[int, int | None]) -> None:  # from the model thread
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (shutdown)
            pass

    for i, job in enumerate(jobs):
        job.on_token = lambda tok, i=i: push((i, tok))
    futures = state.engine.submit(jobs)  # a full queue raises here: HTTP 429 before any byte is sent
    for i, f in enumerate(futures):
        f.add_done_callback(lambda _f, i=i: push((i, None)))
    created = int(time.time())

    def chunk(i: int, text: str | None, finish: str | None, role: bool = False) -> str:
        if chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {"content": text}
            choice = {"index": i, "delta": delta if text is not None or role else {}, "logprobs": None,
                      "finish_reason": finish}
        else:
            choice = {"index": i, "text": text or "", "logprobs": None, "finish_reason": finish}
        obj = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
               "model": name, "choices": [choice]}
        return f"data: {json.dumps(obj)}\n\n"

    async def events() -> AsyncIterator[str]:
        t0 = time.perf_counter()
        tokens: list[list[int]] = [[] for _ in jobs]
        sent = [""] * len(jobs)
        left, n_out, first = len(jobs), 0, True
        try:
            if chat:
                for i in range(len(jobs)):
                    yield chunk(i, None, None, role=True)
            while left:
                i, tok = await queue.get()
                if tok is not None:
                    if first:
                        state.metrics.ttft.observe(time.perf_counter() - t0)
                        first = False
                    tokens[i].append(tok)
                    text = safe_text(state.runner.decode(tokens[i]), p.stop)
                    if len(text) > len(sent[i]) and text.startswith(sent[i]):
                        yield chunk(i, text[len(sent[i]):], None)
                        sent[i] = text
                    continue
                left -= 1
                f = futures[i]
                if f.cancelled():
                    continue
                if f.exception() is not None:
                    status, message, type_, code = classify_error(f.exception(), rid)  # logged under this id
                    yield f"data: {json.dumps({'error': {'message': message, 'type': type_, 'code': code}})}\n\n"
                    continue
                r = f.result()
                n_out += len(r.tokens)
                rest = r.text[len(sent[i]):] if r.text.startswith(sent[i]) else ""
                yield chunk(i, rest, r.finish_reason)
            if p.include_usage:
                usage = {"prompt_tokens": usage_prompt, "completion_tokens": n_out,
                         "total_tokens": usage_prompt + n_out}
                obj = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                       "created": created, "model": name, "choices": [], "usage": usage}
                yield f"data: {json.dumps(obj)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            for job in jobs:  # a client that went away stops costing model time
                job.cancelled = True

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
