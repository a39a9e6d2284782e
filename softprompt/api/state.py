"""What the HTTP layer shares across requests, and the helpers every endpoint uses: auth, JSON, handles."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request

from softprompt.api.jsonbody import read_json  # noqa: F401 - the routes import it from here
from softprompt.errors import InputError
from softprompt.serving.cache import Entry
from softprompt.serving.config import ServeConfig
from softprompt.serving.engine import Engine
from softprompt.serving.errors import Unauthorized
from softprompt.serving.metrics import Metrics
from softprompt.serving.refs import version_ref
from softprompt.serving.runner import Runner
from softprompt.serving.store import NO_PROMPT, PromptHandle, Store, check_name, open_store
from softprompt.serving.store_cache import CachedStore
from softprompt.serving.validate import check_servable


@dataclass
class ServerState:
    store: CachedStore
    runner: Runner
    engine: Engine
    config: ServeConfig
    metrics: Metrics
    _extras: dict[PromptHandle, dict[str, Any]] = field(default_factory=dict)

    @property
    def base(self) -> Any:
        return self.runner.base

    def extra(self, handle: PromptHandle) -> dict[str, Any]:
        """The manifest extras (template, verbalizer) of a version; versions are immutable, so cached."""
        got = self._extras.get(handle)
        if got is None:
            got = json.loads(self.store.read_manifest(handle)).get("extra") or {}
            if len(self._extras) >= 4096:
                self._extras.clear()
            self._extras[handle] = got
        return got


def build_state(base: Any, store: str | Path | Store, config: ServeConfig | None = None) -> ServerState:
    """Compose store, runner and engine for one base model (neither the engine nor the store watch is started:
    the app's lifespan starts them). `store`: a directory, a postgresql:// URL, or a Store."""
    config = config or ServeConfig()
    store = store if isinstance(store, CachedStore) else CachedStore(open_store(store))
    store.bind_base(base.fingerprint)
    runner = Runner(base, soft_prefix_cache=config.soft_prefix_cache and not config.embedding_only)
    metrics = Metrics()

    def load(handle: PromptHandle) -> Entry:
        manifest, tensors = store.read(handle)
        entry = runner.load(manifest, tensors)
        metrics.cache_misses.inc()
        return entry

    return ServerState(store, runner, Engine(runner, load, config, metrics), config, metrics)


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


def parse_model(model: Any) -> tuple[str, str | None]:
    """'task' | 'task@3' | 'task@prod' | 'task@latest' -> (task, ref)."""
    if not isinstance(model, str) or not model:
        raise InputError("'model' is required: name a task as 'task', 'task@VERSION' or 'task@ALIAS' "
                         f"(or {NO_PROMPT!r} for the plain model)")
    task, sep, ref = model.partition("@")
    if task != NO_PROMPT:
        check_name("task", task)
    if not sep:
        return task, None
    parsed = version_ref(ref)
    if isinstance(parsed, str) and parsed != "latest":
        check_name("alias", parsed)
    return task, ref


def resolve(request: Request, state: ServerState, tenant: str, model: Any) -> tuple[PromptHandle | None, str]:
    """The caller's model name -> (handle fixed at admission, the name to report). None: the plain model."""
    task, ref = parse_model(model)
    if task == NO_PROMPT:
        if ref is not None:
            raise InputError(f"{NO_PROMPT!r} is the plain model and has no versions; send model={NO_PROMPT!r}")
        request.state.task = task
        return None, NO_PROMPT
    handle, info = state.store.resolve(tenant, task, ref)
    request.state.task = handle.task  # a metrics label only once resolved: a 404 never creates a series
    check_servable(info.method, state.config.embedding_only)
    return handle, str(handle)
