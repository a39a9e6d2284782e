"""Errors of the serving layer. The API maps each to an HTTP status; every message names the cause and the fix."""

from __future__ import annotations

from softprompt.errors import SoftPromptError


class NotFound(SoftPromptError, LookupError):
    """A task, version, alias or tenant does not exist (for the caller: other tenants' names are never revealed)."""


class Conflict(SoftPromptError):
    """The request is valid but cannot apply to the current state (e.g. nothing to roll back to)."""


class Unauthorized(SoftPromptError):
    """No API key, or an unknown or revoked one."""


class QueueFull(SoftPromptError):
    """The engine's queue is full: the client should retry later (HTTP 429)."""


class Refused(SoftPromptError):
    """The server is configured not to serve this prompt (e.g. --embedding-only and a prefix-tuning task)."""


class ShuttingDown(SoftPromptError):
    """The server is stopping; the request was not run (HTTP 503)."""


class StoreUnavailable(SoftPromptError):
    """The store (e.g. the PostgreSQL database) cannot be reached; versions already loaded keep serving (HTTP 503)."""
