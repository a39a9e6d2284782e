"""Task management over HTTP, always inside the caller's tenant: push a version, list, promote, roll back.

    POST /v1/tasks/{task}/versions   multipart fields 'manifest' (manifest.json) and 'tensors' (prompt.safetensors)
    GET  /v1/tasks
    POST /v1/tasks/{task}/promote    {"version": 3 | "latest", "alias": "prod"}
    POST /v1/tasks/{task}/rollback   {"alias": "prod"}
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from softprompt.api.errors import UnsupportedMediaType
from softprompt.api.multipart import parse_form
from softprompt.api.state import ServerState, authenticate, read_json
from softprompt.errors import InputError
from softprompt.serving.refs import version_ref
from softprompt.serving.store import DEFAULT_ALIAS, check_name
from softprompt.serving.validate import check_upload

router = APIRouter()
FILES = {"manifest": ".json", "tensors": ".safetensors"}


def _state(request: Request) -> ServerState:
    return request.app.state.sp


def _task(request: Request, task: str) -> str:
    return check_name("task", task)


def _label(request: Request, task: str) -> None:
    """Name the task in the request metrics only once the store has answered for it (the caller's own task):
    a 404 or 400 never creates a series, so clients cannot mint label values."""
    request.state.task = task


@router.get("/v1/tasks")
async def list_tasks(request: Request) -> Any:
    state = _state(request)
    tenant = authenticate(request, state)
    return {"object": "list", "data": state.store.list_tasks(tenant)}


@router.post("/v1/tasks/{task:path}/versions")
async def push_version(request: Request, task: str) -> Any:
    state = _state(request)
    tenant = authenticate(request, state)
    _task(request, task)
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise UnsupportedMediaType("upload manifest.json and prompt.safetensors as multipart/form-data fields "
                                   f"'manifest' and 'tensors' (got content type {ctype or 'none'!r})")
    form = parse_form(await request.body(), ctype, tuple(FILES))
    missing = [f for f in FILES if f not in form]
    if missing:
        raise InputError(f"upload lacks the field(s) {missing}: send 'manifest' (manifest.json) and 'tensors' "
                         "(prompt.safetensors)")
    for field, suffix in FILES.items():
        filename = form[field][0]
        if filename and not filename.endswith(suffix):
            raise InputError(f"field {field!r} holds {filename!r}; it takes a {suffix} file (a prompt is "
                             "manifest.json + prompt.safetensors; pickles and other formats are refused)")
    alias = _promote_alias(request)  # every check before anything is written: the push happens whole or not at all
    manifest, tensors = form["manifest"][1], form["tensors"][1]
    checked = await asyncio.to_thread(check_upload, manifest, tensors, base=state.base,
                                      embedding_only=state.config.embedding_only)
    info = await asyncio.to_thread(state.store.push, tenant, task, manifest, tensors, checked.method)
    _label(request, task)
    out = {"task": task, "version": info.version, "method": info.method, "digest": info.digest,
           "model": f"{task}@{info.version}"}
    if alias:
        out["promoted"] = await asyncio.to_thread(state.store.promote, tenant, task, info.version, alias)
    return JSONResponse(out, status_code=201)


def _promote_alias(request: Request) -> str | None:
    """The ?promote=ALIAS of a push, checked before the push (None when absent or empty)."""
    values = request.query_params.getlist("promote")
    if len(values) > 1:
        raise InputError(f"promote is given {len(values)} times; give at most one alias")
    return check_name("alias", values[0]) if values and values[0] else None


@router.post("/v1/tasks/{task:path}/promote")
async def promote(request: Request, task: str) -> Any:
    state = _state(request)
    tenant = authenticate(request, state)
    _task(request, task)
    body = await read_json(request, optional=True)
    version = version_ref(body.get("version"))
    alias = check_name("alias", body.get("alias", DEFAULT_ALIAS))
    out = await asyncio.to_thread(state.store.promote, tenant, task, version, alias)
    _label(request, task)
    return out


@router.post("/v1/tasks/{task:path}/rollback")
async def rollback(request: Request, task: str) -> Any:
    state = _state(request)
    tenant = authenticate(request, state)
    _task(request, task)
    body = await read_json(request, optional=True)
    out = await asyncio.to_thread(state.store.rollback, tenant, task, check_name("alias", body.get("alias",
                                                                                                 DEFAULT_ALIAS)))
    _label(request, task)
    return out
