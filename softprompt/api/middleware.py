"""Pure ASGI middleware: request ids and the catch-all for unexpected errors (HTTP 500), body size limits
(HTTP 413) and per-request metrics (status, latency, tenant, task); and who may read /metrics."""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from typing import Any

from softprompt.api.errors import BodyTooLarge, Forbidden
from softprompt.serving.errors import NotFound, Unauthorized
from softprompt.serving.metrics import Metrics

log = logging.getLogger(__name__)
MAX_CONTENT_LENGTH_DIGITS = 18

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
        if declared is not None and (not declared.isdigit() or len(declared) > MAX_CONTENT_LENGTH_DIGITS
                                     or int(declared) > limit):
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


class CatchAll:
    """The outermost layer: gives every request an id (`x-request-id` header, error messages, logs) and turns
    any exception that escaped the routes into a logged HTTP 500 in OpenAI's error shape, never a traceback.
    After the response has started (a stream), the error can only be logged and the connection closed."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = "req-" + uuid.uuid4().hex[:24]
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def tagged(msg: dict) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
                msg = {**msg, "headers": [*msg.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(msg)

        try:
            await self.app(scope, receive, tagged)
        except Exception:  # noqa: BLE001 - the one place an unexpected error becomes a 500
            log.exception("internal error in %s %s (request id %s)", scope.get("method"), scope.get("path"), rid)
            if not started:
                await send_json(tagged, 500, internal_error_body(rid))


def internal_error_body(rid: str) -> dict[str, Any]:
    return {"error": {"message": f"internal error (request id {rid}); the server keeps running, and its log has "
                                 "the details under this id", "type": "server_error", "param": None,
                      "code": "internal_error"}}


async def send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def is_loopback(host: str | None) -> bool:
    return bool(host) and (host in LOOPBACK or host.startswith("127.") or host.startswith("::ffff:127."))


def check_metrics_access(mode: str, key: str, client_host: str | None, authorization: str) -> None:
    """Raise unless this caller may read /metrics under `mode` (see ServeConfig.metrics_access)."""
    if mode == "open":
        return
    if mode == "off":
        raise NotFound("/metrics is turned off on this server (metrics_access='off')")
    if mode == "local":
        if not is_loopback(client_host):
            raise Forbidden("/metrics answers only clients on this machine (metrics_access='local'); scrape it from "
                            "127.0.0.1, or start the server with --metrics-access key and SOFTPROMPT_METRICS_KEY")
        return
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("utf-8", "surrogatepass"),
                                                            key.encode("utf-8", "surrogatepass")):
        raise Unauthorized("/metrics needs `Authorization: Bearer <metrics key>` (the SOFTPROMPT_METRICS_KEY the "
                           "server was started with; tenant API keys do not open it)")
