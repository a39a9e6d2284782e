"""Prometheus metrics of one server (a registry per server, so several can live in one process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.queue_depth = Gauge("softprompt_queue_depth", "Requests waiting for the model", registry=r)
        self.batch_size = Histogram("softprompt_batch_size", "Rows per model batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.batch_seconds = Histogram("softprompt_batch_seconds", "Wall time of one model batch",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("softprompt_generated_tokens", "Tokens generated", registry=r)
        self.tokens_per_second = Gauge("softprompt_tokens_per_second",
                                       "Generated tokens per second during the last batch", registry=r)
        self.latency = Histogram("softprompt_request_latency_seconds", "Request latency, admission to last byte",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("softprompt_time_to_first_token_seconds", "Streaming: admission to first token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("softprompt_requests", "Requests by tenant, task, endpoint and HTTP status",
                                ["tenant", "task", "endpoint", "status"], registry=r)
        self.rejected = Counter("softprompt_rejected", "Requests refused before reaching the model", ["reason"],
                                registry=r)
        self.cache_bytes = Gauge("softprompt_prompt_cache_bytes", "Bytes held by the prompt table", registry=r)
        self.cache_entries = Gauge("softprompt_prompt_cache_entries", "Versions held by the prompt table", registry=r)
        self.cache_misses = Counter("softprompt_prompt_cache_misses", "Prompt table loads", registry=r)
        # the continuous engine's step loop and KV pool
        self.running_rows = Gauge("softprompt_running_rows", "Rows in the running batch", registry=r)
        self.step_seconds = Histogram("softprompt_step_seconds", "Wall time of one scheduler step",
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.step_tokens = Histogram("softprompt_step_tokens", "Tokens fed to the model in one step",
                                     buckets=(1, 4, 16, 64, 256, 1024, 4096), registry=r)
        self.kv_blocks_used = Gauge("softprompt_kv_blocks_used", "KV pool blocks held by running rows", registry=r)
        self.kv_blocks_total = Gauge("softprompt_kv_blocks_total", "KV pool blocks rows can hold", registry=r)
        self.kv_bytes_per_token = Gauge("softprompt_kv_bytes_per_token",
                                        "KV pool bytes of one token of one row (keys and values, every layer)",
                                        registry=r)
        self.kv_row_bytes = Histogram("softprompt_kv_row_bytes", "KV pool bytes reserved by one row at admission",
                                      buckets=tuple(4**k * 1024 for k in range(1, 10)), registry=r)
        self.kv_prefix_bytes = Gauge("softprompt_kv_prefix_bytes",
                                     "Bytes of the shared K/V prefixes in the prompt table (one copy per version, "
                                     "whatever the number of rows reading it)", registry=r)
        self.prompt_load_seconds = Histogram("softprompt_prompt_load_seconds",
                                             "Cold prompt loads: store read, validation, parts computed once",
                                             buckets=LATENCY_BUCKETS, registry=r)

    def observe_step(self, rows: int, fed: int, emitted: int, seconds: float, *, running: int, kv_used: int,
                     cache: Any) -> None:
        """One scheduler step: its rows, tokens fed and emitted, wall time; the state it left behind."""
        self.batch_size.observe(rows)
        self.step_seconds.observe(seconds)
        self.step_tokens.observe(fed)
        self.tokens.inc(emitted)
        self.running_rows.set(running)
        self.kv_blocks_used.set(kv_used)
        self.cache_bytes.set(cache.nbytes)
        self.cache_entries.set(len(cache))
        self.kv_prefix_bytes.set(cache.prefix_bytes)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
