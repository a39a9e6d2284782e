"""Every error the API returns: an HTTP status and an OpenAI-style body {"error": {"message", "type", "code"}}."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from softprompt.errors import ArtifactError, ConfigError, IncompatibleBaseError, InputError, SoftPromptError
from softprompt.serving.errors import (
    Conflict,
    NotFound,
    QueueFull,
    Refused,
    ShuttingDown,
    StoreUnavailable,
    Unauthorized,
)

log = logging.getLogger(__name__)


class BodyTooLarge(SoftPromptError):
    """The request body is bigger than this server accepts."""


class UnsupportedMediaType(InputError):
    """The body has the wrong content type."""


class Forbidden(SoftPromptError):
    """The caller may not use this endpoint from where it is (e.g. /metrics from off the machine)."""


# (class, status, type, code), most specific first
_MAP: list[tuple[type[BaseException], int, str, str]] = [
    (Unauthorized, 401, "authentication_error", "invalid_api_key"),
    (Forbidden, 403, "permission_error", "forbidden"),
    (NotFound, 404, "not_found_error", "not_found"),
    (Conflict, 409, "conflict_error", "conflict"),
    (BodyTooLarge, 413, "invalid_request_error", "body_too_large"),
    (UnsupportedMediaType, 415, "invalid_request_error", "unsupported_media_type"),
    (IncompatibleBaseError, 422, "invalid_artifact", "incompatible_base"),
    (ArtifactError, 422, "invalid_artifact", "invalid_artifact"),
    (Refused, 422, "invalid_request_error", "embedding_only"),
    (QueueFull, 429, "rate_limit_error", "queue_full"),
    (ShuttingDown, 503, "server_error", "shutting_down"),
    (StoreUnavailable, 503, "server_error", "store_unavailable"),
    (InputError, 400, "invalid_request_error", "invalid_request"),
    (ConfigError, 400, "invalid_request_error", "invalid_request"),
]


def error_response(status: int, message: str, type_: str, code: str, headers: dict | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def classify_error(exc: BaseException, request_id: str | None = None) -> tuple[int, str, str, str]:
    """-> (status, message, type, code) for any exception (unknown ones are 500, logged with the request id)."""
    for cls, status, type_, code in _MAP:
        if isinstance(exc, cls):
            return status, str(exc), type_, code
    rid = request_id or "req-" + uuid.uuid4().hex[:24]
    log.error("internal error (request id %s)", rid, exc_info=exc)
    return (500, f"internal error (request id {rid}); the server keeps running, and its log has the details under "
            "this id", "server_error", "internal_error")


def install(app: FastAPI) -> None:
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        status, message, type_, code = classify_error(exc, getattr(request.state, "request_id", None))
        headers = {"Retry-After": "1"} if status in (429, 503) else (
            {"WWW-Authenticate": "Bearer"} if status == 401 else None)
        return error_response(status, message, type_, code, headers)

    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = {404: f"no such endpoint {request.url.path!r}", 405: f"method {request.method} not allowed here"}
        return error_response(exc.status_code, msg.get(exc.status_code, str(exc.detail)), "invalid_request_error",
                              str(exc.status_code))

    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, f"invalid request: {exc.errors()}", "invalid_request_error", "invalid_request")

    app.add_exception_handler(SoftPromptError, on_error)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    # anything else reaches middleware.CatchAll: a logged 500 with the request id
