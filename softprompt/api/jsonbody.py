"""The one reader of JSON request bodies: bounded (depth, number size), typed (an object), valid Unicode."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from softprompt.errors import InputError
from softprompt.safejson import JsonLimitError, loads


def parse_body(raw: bytes, *, optional: bool = False) -> dict[str, Any]:
    """A request body as a JSON object; InputError (HTTP 400) naming the problem for anything else: bytes that
    are not UTF-8, malformed JSON, nesting deeper than 64, numbers over 64 characters, NaN/Infinity, lone
    surrogate escapes in any string, or a value that is not an object."""
    if optional and not raw.strip():
        return {}
    try:
        body = loads(raw)
    except JsonLimitError as e:
        raise InputError(f"the request body cannot be used: {e}") from None
    if not isinstance(body, dict):
        raise InputError(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


async def read_json(request: Request, *, optional: bool = False) -> dict[str, Any]:
    """The request's body through `parse_body`."""
    return parse_body(await request.body(), optional=optional)
