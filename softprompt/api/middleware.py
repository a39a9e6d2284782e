"""Pure ASGI middleware: body size limits (HTTP 413) and per-request metrics (status, latency, tenant, task)."""

from __future__ import annotations

import json
import time
from typing import Any

from softprompt.api.errors import BodyTooLarge
from softprompt.serving.metrics import Metrics

ENDPOINTS = {"/v1/completions": "completions", "/v1/chat/completions": "chat", "/v1/classify": "classify",
             "/v1/tasks": "tasks", "/v1/models": "models"}


def endpoint_of(path: str) -> str:
    if path.startswith("/v1/tasks"):
        return "tasks"
    return ENDPOINTS.get(path, "other")


class BodyLimit:
    """Refuse bodies over a size: at once from Content-Length, or while reading for chunked bodies."""

    def __init__(self, app: Any, max_body: int, max_upload: int):
        self.app, self.max_body, self.max_upload = app, max_body, max_upload

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        upload = scope["path"].startswith("/v1/tasks/") and scope["path"].endswith("/versions")
        limit = self.max_upload if upload else self.max_body
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _drain(receive, limit)
            return await _send_413(send, limit)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    if msg.get("more_body"):
                        await _drain(receive, limit)
                    raise BodyTooLarge(f"request body over {limit} bytes; this server accepts at most {limit}")
            return msg

        await self.app(scope, limited, send)


async def _drain(receive: Any, limit: int) -> None:
    """Read and drop the rest of a refused body (up to a bound), so the client sees the 413 rather than a reset."""
    budget = 4 * limit + (16 << 20)
    while budget > 0:
        msg = await receive()
        if msg["type"] != "http.request" or not msg.get("more_body"):
            return
        budget -= len(msg.get("body", b""))


async def _send_413(send: Any, limit: int) -> None:
    body = json.dumps({"error": {"message": f"request body over {limit} bytes; this server accepts at most {limit}",
                                 "type": "invalid_request_error", "param": None, "code": "body_too_large"}}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class Observe:
    """Count every request by tenant, task, endpoint and status; time it to its last byte."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = 500
        state = scope.setdefault("state", {})

        async def watched(msg: dict) -> None:
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, watched)
        finally:
            ep = endpoint_of(scope["path"])
            self.metrics.latency.labels(ep).observe(time.perf_counter() - t0)
            self.metrics.requests.labels(state.get("tenant", "-"), state.get("task", "-"), ep, str(status)).inc()
