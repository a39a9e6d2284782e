"""The FastAPI application of `softprompt serve` (built around a ServerState; see `build_state`)."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from softprompt import __version__
from softprompt.api import errors, openai_routes, tasks_routes
from softprompt.api.middleware import BodyLimit, CatchAll, Observe, check_metrics_access
from softprompt.api.state import ServerState
from softprompt.errors import ConfigError
from softprompt.serving.config import METRICS_KEY_ENV, MIN_METRICS_KEY_CHARS, metrics_key
from softprompt.serving.store_cache import CachedStore

log = logging.getLogger("softprompt.api")


def create_app(state: ServerState) -> FastAPI:
    """An ASGI app whose lifespan starts and stops the engine's model thread and the store's watch thread."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        state.store.start_watching()
        state.engine.start()
        try:
            yield
        finally:
            state.engine.stop()
            state.store.stop_watching()

    app = FastAPI(title="softprompt", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  redirect_slashes=False,
                  openapi_url=None)
    app.state.sp = state
    errors.install(app)
    app.include_router(openai_routes.router)
    app.include_router(tasks_routes.router)
    app.add_middleware(Observe, metrics=state.metrics)
    app.add_middleware(BodyLimit, max_body=state.config.max_body_bytes, max_upload=state.config.max_upload_bytes)
    app.add_middleware(CatchAll)  # added last: the outermost layer
    metrics_key = _metrics_key(state.config.metrics_access)

    @app.get("/health")
    async def health() -> Any:
        ok = state.engine.is_alive()
        store = await asyncio.to_thread(_store_health, state.store)  # a database round trip: off the event loop
        status = ("ok" if store["store"] == "ok" else "degraded") if ok else "down"
        body = {"status": status, "base": state.base.name, "queue_depth": state.engine.queue_depth(),
                "embedding_only": state.config.embedding_only, "scheduler": state.config.scheduler, **store}
        if hasattr(state.engine, "running_rows"):
            body["running_rows"] = state.engine.running_rows()
            body["kv_blocks_used"] = state.engine.pool.used_blocks
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        check_metrics_access(state.config.metrics_access, metrics_key, request.client.host if request.client else None,
                             request.headers.get("authorization", ""))
        data, ctype = state.metrics.render()
        return Response(data, media_type=ctype)

    return app


def _store_health(store: CachedStore) -> dict[str, Any]:
    """The registry as /health reports it: one read of its change counter. An unreachable store makes the server
    'degraded', not down: versions it has loaded keep serving, and only new resolves fail (HTTP 503)."""
    try:
        return {"store": "ok", "store_generation": store.generation()}
    except Exception as e:  # noqa: BLE001 - any failure to read the registry is reported, never raised
        log.warning("/health: the store %s cannot be read: %s", store.location, e)
        return {"store": "unavailable", "store_error": type(e).__name__}


def _metrics_key(mode: str) -> str:
    """The /metrics key of metrics_access='key', read once at start (ServeConfig checked that it is set)."""
    key = metrics_key() if mode == "key" else ""
    if mode == "key" and len(key) < MIN_METRICS_KEY_CHARS:  # unset since the config was built
        raise ConfigError([f"metrics_access='key' needs {METRICS_KEY_ENV} set to a key of at least "
                           f"{MIN_METRICS_KEY_CHARS} characters"], where="ServeConfig")
    return key
