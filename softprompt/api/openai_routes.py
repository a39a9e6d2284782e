"""OpenAI-compatible endpoints: /v1/completions, /v1/chat/completions (with SSE streaming), /v1/classify,
/v1/models. `model` names a task: 'task', 'task@VERSION' or 'task@ALIAS' ('base' is the plain model)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from softprompt.api.errors import classify_error
from softprompt.api.params import GenParams, chat_messages, check_fits, check_prompt_ids, completion_prompts, gen_params
from softprompt.api.state import ServerState, authenticate, read_json, resolve
from softprompt.errors import InputError
from softprompt.serving.processor import Submitted
from softprompt.serving.store import NO_PROMPT, PromptHandle

router = APIRouter()
DISCONNECT_POLL_S = 0.25


def _state(request: Request) -> ServerState:
    return request.app.state.sp


@router.post("/v1/completions")
async def completions(request: Request) -> Any:
    state = _state(request)
    tenant = authenticate(request, state)
    body = await read_json(request)
    params = gen_params(body, state.config, chat=False)
    handle, name = resolve(request, state, tenant, body.get("model"))
    ids = [check_prompt_ids(state.processor.encode(p), state.config) for p in completion_prompts(body, state.config)]
    return await _generate(request, state, tenant, handle, name, ids, params, chat=False)


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Any:
    state = _state(request)
    tenant = authenticate(request, state)
    body = await read_json(request)
    params = gen_params(body, state.config, chat=True)
    handle, name = resolve(request, state, tenant, body.get("model"))
    ids = [check_prompt_ids(state.processor.chat(chat_messages(body)), state.config, "the conversation")]
    return await _generate(request, state, tenant, handle, name, ids, params, chat=True)


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
    cands = await asyncio.to_thread(state.processor.render_classify, handle, inputs)
    for c in cands:
        check_prompt_ids(c.prefix, state.config, "the formatted input")
    results = await _gather(state.processor.classify(handle, tenant, cands), request)
    if results is None:
        return _gone()
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


async def _gather(sub: Submitted, request: Request) -> list[Any] | None:
    """The results of a request's rows, or None when the client went away first (checked every
    DISCONNECT_POLL_S): its rows are cancelled, and their KV is freed at the engine's next step."""
    task = asyncio.ensure_future(asyncio.gather(*(asyncio.wrap_future(f) for f in sub.futures)))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return list(task.result())
            if await request.is_disconnected():
                sub.cancel()
                task.cancel()
                return None
    except asyncio.CancelledError:
        sub.cancel()
        task.cancel()
        raise


def _gone() -> Response:
    return Response(status_code=499)  # nginx's "client closed request"; nobody reads it


async def _generate(request: Request, state: ServerState, tenant: str, handle: PromptHandle | None, name: str,
                    ids: list[list[int]], p: GenParams, *, chat: bool) -> Any:
    check_fits(len(ids) * p.n, state.config)
    rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    usage_prompt = sum(len(r) for r in ids)
    if p.stream:
        return _stream(state, tenant, handle, ids, rid, name, p, chat, usage_prompt)
    results = await _gather(state.processor.generate(handle, tenant, ids, max_tokens=p.max_tokens,
                                                     sampling=p.sampling, stop=p.stop, seed=p.seed, n=p.n),
                            request)
    if results is None:
        return _gone()
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


def _stream(state: ServerState, tenant: str, handle: PromptHandle | None, ids: list[list[int]], rid: str, name: str,
            p: GenParams, chat: bool, usage_prompt: int) -> StreamingResponse:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    t0 = time.perf_counter()

    def push(item: tuple[int, str | None]) -> None:  # from the model thread
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop is gone (shutdown)
            pass

    sub = state.processor.generate(handle, tenant, ids, max_tokens=p.max_tokens, sampling=p.sampling, stop=p.stop,
                                   seed=p.seed, n=p.n, on_text=lambda i, d: push((i, d)))
    # a full queue raised above: HTTP 429 before any byte is sent
    futures = sub.futures
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
        sent = [""] * len(futures)
        left, n_out, first = len(futures), 0, True
        try:
            if chat:
                for i in range(len(futures)):
                    yield chunk(i, None, None, role=True)
            while left:
                i, delta = await queue.get()
                if delta is not None:  # one per token: the text it made streamable ("" while held back)
                    if first:
                        state.metrics.ttft.observe(time.perf_counter() - t0)
                        first = False
                    if delta:
                        sent[i] += delta
                        yield chunk(i, delta, None)
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
            sub.cancel()  # a client that went away stops costing model time: its rows leave at the next step

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
