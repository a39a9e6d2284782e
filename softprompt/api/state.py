"""What the HTTP layer shares across requests, and the helpers every endpoint uses: auth, JSON, handles."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request

from softprompt.errors import InputError
from softprompt.serving.config import ServeConfig
from softprompt.serving.errors import Unauthorized
from softprompt.serving.metrics import Metrics
from softprompt.serving.processor import Processor
from softprompt.serving.runner import Runner
from softprompt.serving.service import build_service
from softprompt.serving.store import NO_PROMPT, PromptHandle, Store, check_name
from softprompt.serving.validate import check_servable


@dataclass
class ServerState:
    store: Store
    runner: Runner
    engine: Any  # serving.continuous.ContinuousEngine, or serving.engine.Engine (--scheduler static)
    config: ServeConfig
    metrics: Metrics
    processor: Processor

    @property
    def base(self) -> Any:
        return self.runner.base


def build_state(base: Any, registry: str | Path | Store, config: ServeConfig | None = None) -> ServerState:
    """Compose the store and the serving stack (serving.service) for one base model (the engine is not started)."""
    config = config or ServeConfig()
    store = registry if isinstance(registry, Store) else Store(registry)
    store.bind_base(base.fingerprint)
    sv = build_service(base, store, config)
    return ServerState(store, sv.runner, sv.engine, config, sv.metrics, sv.processor)


def authenticate(request: Request, state: ServerState) -> str:
    """The caller's tenant, from `Authorization: Bearer <key>`."""
    auth = request.headers.get("authorization", "")
    scheme, _, key = auth.partition(" ")
    tenant = state.store.authenticate(key.strip()) if scheme.lower() == "bearer" else None
    if tenant is None:
        raise Unauthorized("missing or invalid API key: send `Authorization: Bearer <key>` (a tenant's key, from "
                           "`softprompt tenant create NAME`)")
    request.state.tenant = tenant
    return tenant


async def read_json(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The body as a JSON object, with a clear 400 for non-UTF-8 bytes, malformed JSON or a non-object."""
    raw = await request.body()
    if optional and not raw.strip():
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"the request body is not valid UTF-8 (byte {e.start}); send UTF-8 encoded JSON") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"the request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(body, dict):
        raise InputError(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def parse_model(model: Any) -> tuple[str, str | None]:
    """'task' | 'task@3' | 'task@prod' | 'task@latest' -> (task, ref)."""
    if not isinstance(model, str) or not model:
        raise InputError("'model' is required: name a task as 'task', 'task@VERSION' or 'task@ALIAS' "
                         f"(or {NO_PROMPT!r} for the plain model)")
    task, sep, ref = model.partition("@")
    if task != NO_PROMPT:
        check_name("task", task)
    if sep and not ref.isdigit() and ref != "latest":
        check_name("alias", ref)
    return task, (ref if sep else None)


def resolve(request: Request, state: ServerState, tenant: str, model: Any) -> tuple[PromptHandle | None, str]:
    """The caller's model name -> (handle fixed at admission, the name to report). None: the plain model."""
    task, ref = parse_model(model)
    request.state.task = task
    if task == NO_PROMPT:
        if ref is not None:
            raise InputError(f"{NO_PROMPT!r} is the plain model and has no versions; send model={NO_PROMPT!r}")
        return None, NO_PROMPT
    handle, info = state.store.resolve(tenant, task, ref)
    check_servable(info.method, state.config.embedding_only)
    return handle, str(handle)
