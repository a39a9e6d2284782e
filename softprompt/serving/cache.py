"""The prompt table: per-version `PromptParts`, computed once (deep prompt K/V prefixes included) and kept in an
LRU whose size is capped in bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
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
