"""The change feed of a PostgreSQL store: LISTEN on a dedicated connection, re-read the generation counter every
`recheck_s` seconds (a notification lost on the way heals), reconnect when the connection drops (and report a
change if the counter moved meanwhile)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from softprompt.serving.store import OnChange

log = logging.getLogger(__name__)

CHANNEL = "softprompt_store"
RECONNECT_S = 0.5
CONNECT_TIMEOUT_S = 5


def _generation(conn: Any) -> int:
    return conn.execute("SELECT generation FROM changes").fetchone()[0]


def watch(pg: Any, url: str, location: str, recheck_s: float, on_change: OnChange, stop: threading.Event,
          connected: Callable[[], None]) -> None:
    """Call `on_change(reason)` after every change of the store at `url`, until `stop` is set (blocks).

    `pg` is the psycopg module; `connected` is called each time the feed (re)connects.
    """
    seen: list[int] = []  # the last generation heard of, kept across reconnections
    down_since: float | None = None
    while not stop.is_set():
        try:
            with pg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
                conn.execute(f"LISTEN {CHANNEL}")
                now = _generation(conn)
                connected()
                if down_since is not None:
                    log.warning("reconnected to the store %s after %.1f s", location, time.monotonic() - down_since)
                    down_since = None
                if not seen:
                    on_change("watching")  # anything read before now may predate a change this baseline hides
                elif now != seen[0]:
                    on_change("reconnect")  # changes were made while the connection was down
                seen[:] = [now]
                _listen(conn, seen, recheck_s, on_change, stop)
        except pg.OperationalError as e:
            if down_since is None:
                down_since = time.monotonic()
                log.warning("lost the connection to the store %s (%s); serving the versions already resolved and "
                            "reconnecting", location, str(e).strip().splitlines()[0] if str(e).strip() else e)
            stop.wait(RECONNECT_S)


def _listen(conn: Any, seen: list[int], recheck_s: float, on_change: OnChange, stop: threading.Event) -> None:
    next_check = time.monotonic() + recheck_s
    while not stop.is_set():
        for n in conn.notifies(timeout=0.25):  # each as soon as it arrives; the loop ends after 0.25 s
            if n.payload.isdigit() and int(n.payload) > seen[0]:
                seen[0] = int(n.payload)
                on_change("notify")
        if time.monotonic() >= next_check:
            now = _generation(conn)
            if now != seen[0]:
                seen[0] = now
                on_change("recheck")  # a change whose notification never arrived
            next_check = time.monotonic() + recheck_s
