"""Serving options: one frozen dataclass whose field docstrings feed `softprompt serve --help`."""

from __future__ import annotations

import os
from dataclasses import dataclass

from softprompt.config import ConfigBase

METRICS_KEY_ENV = "SOFTPROMPT_METRICS_KEY"
MIN_METRICS_KEY_CHARS = 16


def metrics_key() -> str:
    """The /metrics key of metrics_access='key' (from the environment, so it never shows in `ps` or a config)."""
    return os.environ.get(METRICS_KEY_ENV, "")


@dataclass(frozen=True)
class ServeConfig(ConfigBase):
    """What an operator chose for one server (limits, batching, cache). Model facts are never stored here."""

    max_batch_size: int = 16
    """Most rows (generation requests or classification candidates) run in one batch."""

    batch_wait_ms: float = 5.0
    """How long the engine collects requests before running a batch that is not yet full."""

    max_queue: int = 256
    """Most requests waiting for the model; beyond it a request gets HTTP 429."""

    max_tokens_limit: int = 256
    """Largest max_tokens a request may ask for."""

    default_max_tokens: int = 16
    """max_tokens of a request that does not set it."""

    max_prompt_tokens: int = 1024
    """Most tokens a request's prompt may hold (the task's virtual tokens are not counted)."""

    max_prompts_per_request: int = 16
    """Most prompts (or inputs to classify, or choices n) one request may carry."""

    max_body_bytes: int = 1 << 20
    """Largest JSON request body in bytes (HTTP 413 beyond)."""

    max_upload_bytes: int = 64 << 20
    """Largest artifact upload (manifest + tensors) in bytes (HTTP 413 beyond)."""

    cache_bytes: int = 256 << 20
    """Memory cap of the prompt table (per-version prompt parts kept ready, least recently used evicted)."""

    embedding_only: bool = False
    """Serve only prompts that change input embeddings (prompt tuning, P-tuning); refuse the rest."""

    soft_prefix_cache: bool = True
    """Run a prompt-tuning / P-tuning version's soft tokens through the model once and serve their K/V prefix
    (the same logits, without recomputing the soft tokens for every request). Never in --embedding-only mode."""

    batch_policy: str = "mixed"
    """'mixed': a batch mixes tasks and methods; 'single_task': one task per batch (a baseline for benchmarks)."""

    metrics_access: str = "local"
    """Who may read GET /metrics (its labels name tenants and tasks): 'local' answers only clients on the loopback
    interface (127.0.0.1, ::1); 'key' needs `Authorization: Bearer $SOFTPROMPT_METRICS_KEY` (the key is read from
    that environment variable at start, never from the command line); 'open' answers anyone; 'off' answers 404."""

    policies = ("mixed", "single_task")
    metrics_modes = ("local", "key", "open", "off")

    def problems(self) -> list[str]:
        out = []
        for name in ("max_batch_size", "max_queue", "max_tokens_limit", "max_prompt_tokens",
                     "max_prompts_per_request", "max_body_bytes", "max_upload_bytes", "cache_bytes"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                out.append(f"{name}={v!r}: must be an integer >= 1")
        if not (isinstance(self.default_max_tokens, int) and 1 <= self.default_max_tokens <= self.max_tokens_limit):
            out.append(f"default_max_tokens={self.default_max_tokens!r}: must be in [1, max_tokens_limit]")
        if not (0 <= self.batch_wait_ms <= 1000):
            out.append(f"batch_wait_ms={self.batch_wait_ms!r}: must be in [0, 1000]")
        if self.batch_policy not in self.policies:
            out.append(f"batch_policy={self.batch_policy!r}: must be one of {', '.join(self.policies)}")
        if self.metrics_access not in self.metrics_modes:
            out.append(f"metrics_access={self.metrics_access!r}: must be one of {', '.join(self.metrics_modes)}")
        elif self.metrics_access == "key" and len(metrics_key()) < MIN_METRICS_KEY_CHARS:
            out.append(f"metrics_access='key' needs {METRICS_KEY_ENV} set to a key of at least "
                       f"{MIN_METRICS_KEY_CHARS} characters (it has {len(metrics_key())})")
        out += self._contradictions()
        return out

    def _contradictions(self) -> list[str]:
        """Limits that are each valid but together refuse requests the other limits allow."""
        ints = ("max_queue", "max_prompts_per_request")
        if not all(isinstance(getattr(self, n), int) for n in ints):
            return []
        if self.max_prompts_per_request > self.max_queue:
            return [f"max_prompts_per_request={self.max_prompts_per_request} is more than max_queue={self.max_queue}: "
                    "a request that large could never be queued; lower --max-prompts-per-request to at most "
                    "--max-queue, or raise --max-queue"]
        return []
