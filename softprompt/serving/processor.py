"""The processor: between the API and the engine, it owns the text (after vLLM's input and output processors).

In: tokenizing, chat templates, classify rendering (the task's template and verbalizer from its manifest).
Out: incremental detokenizing and stop strings, once per row, as tokens arrive from the engine; the API only
forwards the text deltas and the final results.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from softprompt.serving.classify import Candidates, candidates
from softprompt.serving.engine import Job
from softprompt.serving.runner import Runner, Sampling
from softprompt.serving.store import PromptHandle


class TextOutput:
    """One row's text: each new token extends it by a decoded delta (a window of a few tokens is re-decoded, so
    multi-token characters and leading spaces come out as a full decode gives them); a stop string ends it.

    `on_text(delta)` gets every token's streamable delta ("" while it holds back a possible stop-string start or
    half a character), from the engine's thread.
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: Sequence[str] = (),
                 on_text: Callable[[str], None] | None = None):
        self._decode, self.stop, self.on_text = decode, tuple(stop), on_text
        self.ids: list[int] = []
        self.text = ""
        self.stopped = False
        self._prefix, self._read = 0, 0  # window: ids[_prefix:_read] decoded already
        self._sent = 0

    def push(self, token: int) -> bool:
        """Add a token. -> True when a stop string ended the text (the row should stop)."""
        if self.stopped:
            return True
        self.ids.append(token)
        before = len(self.text)
        self.text += self._delta()
        if self.stop:
            lo = max(0, before - max(len(s) for s in self.stop) + 1)
            hits = [i for i in (self.text.find(s, lo) for s in self.stop) if i >= 0]
            if hits:
                self.text = self.text[:min(hits)]
                self.stopped = True
        self._flush(final=self.stopped)
        return self.stopped

    def _delta(self, final: bool = False) -> str:
        done = self._decode(self.ids[self._prefix:self._read])
        new = self._decode(self.ids[self._prefix:])
        if len(new) > len(done) and (final or not new.endswith("\ufffd")):
            self._prefix, self._read = self._read, len(self.ids)
            return new[len(done):]
        return ""

    def finish(self) -> str:
        """The final text (any held-back bytes decoded)."""
        if not self.stopped:
            self.text += self._delta(final=True)
        self._flush(final=True)
        return self.text

    def _flush(self, final: bool) -> None:
        end = len(self.text) if final else len(self.text) - self._hold()
        delta = self.text[self._sent:end] if end > self._sent else ""
        self._sent = max(self._sent, end)
        if self.on_text is not None:
            self.on_text(delta)

    def _hold(self) -> int:
        """Characters at the end that may start a stop string, or end in a half-decoded character."""
        hold = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        rest = self.text[:len(self.text) - hold]
        return hold + (len(rest) - len(rest.rstrip("\ufffd")))


@dataclass
class Submitted:
    """The rows of one request in the engine: their futures, and a cancel for a client that went away."""

    jobs: list[Job]
    futures: list[Future]

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancelled = True


class Processor:
    def __init__(self, runner: Runner, engine: Any, read_manifest: Callable[[PromptHandle], bytes]):
        self.runner, self.engine = runner, engine
        self._read_manifest = read_manifest
        self._extras: dict[PromptHandle, dict[str, Any]] = {}

    @property
    def tokenizer(self) -> Any:
        return self.runner.base.tokenizer

    # --- in ---
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Messages -> prompt ids, with the tokenizer's chat template when it has one."""
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return self.encode(text, add_special_tokens=False)
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return self.encode(text)

    def extra(self, handle: PromptHandle) -> dict[str, Any]:
        """The manifest extras (template, verbalizer) of a version; versions are immutable, so cached."""
        got = self._extras.get(handle)
        if got is None:
            got = json.loads(self._read_manifest(handle)).get("extra") or {}
            if len(self._extras) >= 4096:
                self._extras.clear()
            self._extras[handle] = got
        return got

    def render_classify(self, handle: PromptHandle, texts: list[str]) -> list[Candidates]:
        """Each input rendered with the task's template up to its answer slot, and every candidate word."""
        extra = self.extra(handle)
        return [candidates(extra, handle.task, text, self.tokenizer) for text in texts]

    # --- to the engine ---
    def generate(self, handle: PromptHandle | None, tenant: str, prompts: list[list[int]], *, max_tokens: int,
                 sampling: Sampling, stop: tuple[str, ...] = (), seed: int | None = None, n: int = 1,
                 on_text: Callable[[int, str], None] | None = None) -> Submitted:
        """One row per (prompt, choice); with a seed, row k samples with seed + k, so choices differ and a
        request's text does not depend on which other requests share its step. `on_text(row, delta)` streams."""
        rows = [ids for ids in prompts for _ in range(n)]
        jobs = []
        for k, ids in enumerate(rows):
            cb = None if on_text is None else (lambda d, k=k: on_text(k, d))
            out = TextOutput(self.decode, stop, cb)
            jobs.append(Job(handle, ids, max_tokens, sampling, stop, seed=None if seed is None else seed + k,
                            tenant=tenant, output=out))
        return Submitted(jobs, self.engine.submit(jobs))

    def classify(self, handle: PromptHandle, tenant: str, cands: list[Candidates]) -> Submitted:
        jobs = [Job(handle, classify=c, tenant=tenant) for c in cands]
        return Submitted(jobs, self.engine.submit(jobs))
