"""The prompt table: per-version `PromptParts`, computed once (deep prompt K/V prefixes included) and kept in an
LRU whose size is capped in bytes."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

from softprompt.model.inject import PromptParts
from softprompt.serving.store import PromptHandle


@dataclass
class Entry:
    """A version ready to serve: its parts, manifest extras (template, verbalizer) and method."""

    parts: PromptParts
    method: str
    extra: dict[str, Any] = field(default_factory=dict)
    nbytes: int = 0


def parts_nbytes(parts: PromptParts) -> int:
    tensors: list[torch.Tensor] = []
    for t in (parts.embeds, parts.slots):
        if t is not None:
            tensors.append(t)
    if parts.kv is not None:
        tensors.extend(parts.kv)
    if isinstance(parts.adapter, torch.nn.Module):
        tensors.extend(parts.adapter.parameters())
        tensors.extend(parts.adapter.buffers())
    return int(sum(t.numel() * t.element_size() for t in tensors))


class PartsCache:
    """handle -> Entry, least recently used first out once the entries exceed `max_bytes`.

    An entry bigger than the whole cap is still returned (the batch needs it) but not kept.
    """

    def __init__(self, load: Callable[[PromptHandle], Entry], max_bytes: int):
        self._load = load
        self.max_bytes = max_bytes
        self._entries: OrderedDict[PromptHandle, Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, handle: PromptHandle, **load_kw: Any) -> Entry:
        with self._lock:
            entry = self._entries.get(handle)
            if entry is not None:
                self._entries.move_to_end(handle)
                self.hits += 1
                return entry
            self.misses += 1
        entry = self._load(handle, **load_kw)  # outside the lock: may read files and run the model once
        with self._lock:
            if handle not in self._entries and entry.nbytes <= self.max_bytes:
                self._entries[handle] = entry
                self.nbytes += entry.nbytes
                while self.nbytes > self.max_bytes:
                    _, old = self._entries.popitem(last=False)
                    self.nbytes -= old.nbytes
        return entry

    @property
    def prefix_bytes(self) -> int:
        """Bytes of the K/V prefixes held (each stored once and read by every row of its version)."""
        with self._lock:
            return sum(parts_nbytes(PromptParts(kv=e.parts.kv)) for e in self._entries.values()
                       if e.parts.kv is not None)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, handle: PromptHandle) -> bool:
        return handle in self._entries


class ColdLoads:
    """Versions not yet in the prompt table: their bytes are read (store I/O) on a loader thread, then the model
    thread makes the entry, so a cold prompt never stalls the rows that are running. `read` None: load inline."""

    def __init__(self, cache: PartsCache, read: Callable[[PromptHandle], Any] | None, wake: Callable[[], None],
                 histogram: Any = None):
        self.cache, self._read, self._wake, self._histogram = cache, read, wake, histogram
        self._reads: dict[PromptHandle, tuple[float, Future]] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="softprompt-read") if read is not None else None
        self.seconds: deque[float] = deque(maxlen=10_000)
        """Recent cold loads, from the first read to the entry in the prompt table."""

    def get(self, handle: PromptHandle) -> Entry | None:
        """The version's entry, or None while its bytes are still being read (raises what loading raised)."""
        if handle in self.cache:
            return self.cache.get(handle)
        if self._pool is None:
            t0 = time.perf_counter()
            return self._done(t0, self.cache.get(handle))
        got = self._reads.get(handle)
        if got is None:
            fut = self._pool.submit(self._read, handle)
            self._reads[handle] = (time.perf_counter(), fut)
            fut.add_done_callback(lambda _f: self._wake())
            return None
        if not got[1].done():
            return None
        del self._reads[handle]
        return self._done(got[0], self.cache.get(handle, blob=got[1].result()))

    def _done(self, t0: float, entry: Entry) -> Entry:
        dt = time.perf_counter() - t0
        self.seconds.append(dt)
        if self._histogram is not None:
            self._histogram.observe(dt)
        return entry

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
