"""Run the app under uvicorn: in the foreground (`softprompt serve`) or in a thread (tests, benchmarks)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softprompt.api.app import create_app
from softprompt.api.state import ServerState, build_state
from softprompt.serving.config import ServeConfig
from softprompt.serving.store import Store

log = logging.getLogger(__name__)


def _server(state: ServerState, log_level: str) -> Any:
    import uvicorn

    cfg = uvicorn.Config(create_app(state), log_level=log_level, lifespan="on", timeout_graceful_shutdown=5,
                         access_log=log_level == "debug")
    return uvicorn.Server(cfg)


def serve(base: Any, store: str | Path | Store, config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000,
          exit_after: float | None = None, log_level: str = "info") -> None:
    """Serve until interrupted (or for `exit_after` seconds)."""
    state = build_state(base, store, config)
    server = _server(state, log_level)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    if exit_after:
        timer = threading.Timer(exit_after, lambda: setattr(server, "should_exit", True))
        timer.daemon = True
        timer.start()
    print(f"softprompt: serving {base.name} on http://{host}:{sock.getsockname()[1]} (store {state.store.location})",
          flush=True)
    server.run(sockets=[sock])


@dataclass
class RunningServer:
    url: str
    state: ServerState
    server: Any
    thread: threading.Thread

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_in_thread(state: ServerState, *, host: str = "127.0.0.1", max_lifetime_s: float = 300.0,
                    log_level: str = "warning") -> RunningServer:
    """Start a real uvicorn server on a free port of `host`; it stops by itself after `max_lifetime_s`."""
    server = _server(state, log_level)
    sock = socket.socket(socket.AF_INET)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="softprompt-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    watchdog = threading.Timer(max_lifetime_s, lambda: setattr(server, "should_exit", True))
    watchdog.daemon = True
    watchdog.start()
    return RunningServer(f"http://{host}:{port}", state, server, thread)
