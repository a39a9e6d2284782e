"""Compose the serving stack for one base model: runner, engine (continuous or static), processor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from softprompt.serving.cache import Entry
from softprompt.serving.config import ServeConfig
from softprompt.serving.errors import Refused
from softprompt.serving.metrics import Metrics
from softprompt.serving.processor import Processor
from softprompt.serving.runner import Runner
from softprompt.serving.store import PromptHandle
from softprompt.serving.validate import check_servable


@dataclass
class Service:
    runner: Runner
    engine: Any  # ContinuousEngine | Engine: start, stop, submit, queue_depth, is_alive
    processor: Processor
    metrics: Metrics


def build_service(base: Any, store: Any, config: ServeConfig, metrics: Metrics | None = None) -> Service:
    """The runner, the engine `config.scheduler` names and the processor in front of it (engine not started).
    `store` gives `read(handle) -> (manifest, tensors)` and `read_manifest(handle)`."""
    from softprompt.serving.continuous import ContinuousEngine
    from softprompt.serving.engine import Engine

    metrics = metrics or Metrics()
    runner = Runner(base, soft_prefix_cache=config.soft_prefix_cache and not config.embedding_only)

    def load(handle: PromptHandle, blob: tuple[bytes, bytes] | None = None) -> Entry:
        manifest, tensors = blob if blob is not None else store.read(handle)
        entry = runner.load(manifest, tensors)
        metrics.cache_misses.inc()
        check_servable(entry.method, config.embedding_only)  # once per version, whatever reached the engine
        if config.embedding_only and not entry.parts.embedding_only:
            raise Refused(f"{handle} does not change input embeddings only; it cannot run in --embedding-only mode")
        return entry

    if config.scheduler == "continuous":  # store reads run off the model thread
        engine: Any = ContinuousEngine(runner, load, config, metrics, read=store.read)
    else:
        engine = Engine(runner, load, config, metrics)
    return Service(runner, engine, Processor(runner, engine, store.read_manifest), metrics)
