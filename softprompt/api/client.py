"""Task management over HTTP (what `softprompt push/list/promote/rollback --url` do), and the CLI's choice
between a registry directory and a server."""

from __future__ import annotations

import argparse
import os
from typing import Any

from softprompt.errors import ArtifactError, InputError, SoftPromptError
from softprompt.serving.errors import Conflict, NotFound, QueueFull, Unauthorized
from softprompt.serving.store import DEFAULT_ALIAS

_ERRORS = {400: InputError, 401: Unauthorized, 404: NotFound, 409: Conflict, 413: InputError, 415: InputError,
           422: ArtifactError, 429: QueueFull}


class HttpTasks:
    """The caller's tasks on a running server, authenticated by its API key."""

    def __init__(self, url: str, api_key: str, timeout: float = 120.0):
        import httpx

        if not api_key:
            raise Unauthorized("no API key: pass --api-key or set SOFTPROMPT_API_KEY")
        self.client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout,
                                   headers={"Authorization": f"Bearer {api_key}"})

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        try:
            r = self.client.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise SoftPromptError(f"cannot reach {self.client.base_url}: {e}") from None
        if r.status_code >= 400:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:500]
            raise _ERRORS.get(r.status_code, SoftPromptError)(f"HTTP {r.status_code}: {message}")
        return r.json()

    def push(self, task: str, manifest: bytes, tensors: bytes, promote: str | None = None) -> dict[str, Any]:
        files = {"manifest": ("manifest.json", manifest, "application/json"),
                 "tensors": ("prompt.safetensors", tensors, "application/octet-stream")}
        params = {"promote": promote} if promote else None
        return self._call("POST", f"/v1/tasks/{task}/versions", files=files, params=params)

    def list(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/tasks")["data"]

    def promote(self, task: str, version: str | int | None = None, alias: str = DEFAULT_ALIAS) -> dict[str, Any]:
        return self._call("POST", f"/v1/tasks/{task}/promote", json={"version": version, "alias": alias})

    def rollback(self, task: str, alias: str = DEFAULT_ALIAS) -> dict[str, Any]:
        return self._call("POST", f"/v1/tasks/{task}/rollback", json={"alias": alias})


def add_target_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where the tasks live (a registry directory, or a server with --url)")
    g.add_argument("--registry", default=os.environ.get("SOFTPROMPT_REGISTRY"),
                   help="registry directory; needs --tenant (default: env SOFTPROMPT_REGISTRY)")
    g.add_argument("--tenant", default=os.environ.get("SOFTPROMPT_TENANT"),
                   help="tenant whose tasks to manage in --registry (default: env SOFTPROMPT_TENANT)")
    g.add_argument("--url", default=os.environ.get("SOFTPROMPT_URL"),
                   help="server URL, e.g. http://127.0.0.1:8000; the key picks the tenant "
                        "(default: env SOFTPROMPT_URL)")
    g.add_argument("--api-key", default=None, help="API key for --url (default: env SOFTPROMPT_API_KEY)")


def target_from_args(args: argparse.Namespace) -> Any:
    """HttpTasks for --url, else LocalTasks for --registry + --tenant."""
    if args.url:
        return HttpTasks(args.url, args.api_key or os.environ.get("SOFTPROMPT_API_KEY", ""))
    if not args.registry or not args.tenant:
        raise InputError("say where the tasks live: --url URL (with --api-key) or --registry DIR --tenant NAME")
    from softprompt.serving.admin import LocalTasks

    return LocalTasks(args.registry, args.tenant)
