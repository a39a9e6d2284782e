"""A real uvicorn server on 127.0.0.1 around a tiny random model, tenants, and prompts of every method."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

import softprompt as sp
from softprompt.api.server import RunningServer, start_in_thread
from softprompt.api.state import build_state
from softprompt.serving.admin import LocalTasks
from softprompt.serving.config import ServeConfig
from softprompt.templates import Template, Verbalizer
from softprompt.training.task import Task
from tests.tiny import tiny_base

METHODS = ("prompt_tuning", "p_tuning", "prefix_tuning", "deep_prompt", "adapter")
VERBALIZER = {"positive": ["good", "great"], "negative": ["bad", "awful"]}
TEMPLATE = "Review: {text} Sentiment: {label}"
TASK_EXTRA = Task(Template.parse(TEMPLATE), Verbalizer(VERBALIZER)).to_extra()  # what `softprompt train` saves


def make_prompt(base: sp.Base, method: str, seed: int, n: int = 16, scale: float = 1.0) -> sp.Prompted:
    """A prompt with random parameters large enough to change the tiny model's outputs."""
    cfg = {"prompt_tuning": sp.PromptTuningConfig(num_virtual_tokens=n, init="random", seed=seed),
           "p_tuning": sp.PTuningConfig(num_virtual_tokens=n, seed=seed, encoder_hidden=16),
           "prefix_tuning": sp.PrefixTuningConfig(num_virtual_tokens=n, seed=seed),
           "deep_prompt": sp.DeepPromptConfig(num_virtual_tokens=n, seed=seed),
           "adapter": sp.AdapterConfig(bottleneck=4, seed=seed)}[method]
    p = sp.attach(base, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prm in p.parameters():
            prm.copy_(torch.randn(prm.shape, generator=g) * scale)
    return p


def expected_text(base: sp.Base, prompt: Any, text: str, max_tokens: int) -> str:
    """What the library gives for this one row alone (greedy)."""
    use_cache = prompt is None or prompt.method != "adapter"
    out = sp.generate_ids(base, [prompt], base.encode([text]), max_new_tokens=max_tokens, use_cache=use_cache)[0]
    return base.tokenizer.decode(out, skip_special_tokens=True)


@dataclass
class Served:
    running: RunningServer
    base: sp.Base
    keys: dict[str, str] = field(default_factory=dict)
    prompts: dict[tuple[str, str, int], sp.Prompted] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def state(self) -> Any:
        return self.running.state

    def client(self, tenant: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[tenant]}"} if tenant else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kw)

    def openai(self, tenant: str) -> Any:
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=self.keys[tenant], max_retries=0, timeout=60)

    def add_tenant(self, name: str) -> str:
        self.keys[name] = self.state.store.create_tenant(name)
        return self.keys[name]

    def push(self, tenant: str, task: str, prompt: sp.Prompted, promote: str | None = None, **extra: Any) -> int:
        manifest, tensors = prompt.to_bytes(**extra)
        out = LocalTasks(self.state.store, tenant, base=self.base).push(task, manifest, tensors, promote=promote)
        self.prompts[(tenant, task, out["version"])] = sp.load_prompt_bytes(manifest, tensors, self.base)
        return out["version"]


def start(base: sp.Base, store: Any, **config: Any) -> Served:
    """A server on 127.0.0.1 over `store` (a directory, a postgresql:// URL or a Store)."""
    cfg = {"max_body_bytes": 256 << 10, "max_upload_bytes": 1 << 20, "batch_wait_ms": 10.0, "kv_cache_bytes": 4 << 20,
           **config}
    state = build_state(base, store, ServeConfig(**cfg))
    served = Served(start_in_thread(state, max_lifetime_s=240), base)
    # a test counts the store's changes from here on: its watch's own 'watching' must be behind it
    assert state.store.watching.wait(30), "the server's store watch never went live"
    return served


def _continuous(served: Served) -> bool:
    return hasattr(served.state.engine, "step_hook")


def record_batches(served: Served) -> list[list]:
    """From now on, the prompts of the rows of every batch (continuous: every step) are appended to the list."""
    seen: list[list] = []
    if _continuous(served):
        engine = served.state.engine
        engine.batch_hook = lambda rows: seen.append([r.parts for r in rows])
        return seen
    original = served.state.runner.generate

    def spy(prompts, ids, *a, **kw):
        seen.append(list(prompts))
        return original(prompts, ids, *a, **kw)

    served.state.runner.generate = spy
    return seen


@contextmanager
def slowed(served: Served, seconds_per_step: float) -> Iterator[None]:
    """Make every decoding step of the model thread take a while (to hold requests in flight)."""
    if _continuous(served):
        engine = served.state.engine
        engine.step_hook = lambda _e: time.sleep(seconds_per_step)
        try:
            yield
        finally:
            engine.step_hook = None
        return
    runner = served.state.runner
    original = runner.generate

    def slow(prompts, ids, max_new_tokens, sampling, on_step=None, seeds=None):
        def step(emitted):
            time.sleep(seconds_per_step)
            if on_step is not None:
                on_step(emitted)
        return original(prompts, ids, max_new_tokens, sampling, step, seeds=seeds)

    runner.generate = slow
    try:
        yield
    finally:
        del runner.generate


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and the machine's cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="package")
def tiny() -> sp.Base:
    return tiny_base("llama")


@pytest.fixture(scope="package")
def served(tiny: sp.Base) -> Iterator[Served]:
    """Tenants 'acme' (a task per method, 'cls' with a verbalizer) and 'globex' (its own 'pt' and 'secret')."""
    with tempfile.TemporaryDirectory() as d:
        s = start(tiny, Path(d) / "registry", max_batch_size=16, max_queue=512)
        s.add_tenant("acme")
        s.add_tenant("globex")
        for i, m in enumerate(METHODS):
            s.push("acme", m, make_prompt(tiny, m, seed=10 + i), promote="prod")
        s.push("acme", "pt", make_prompt(tiny, "prompt_tuning", seed=0))
        s.push("acme", "pt", make_prompt(tiny, "prompt_tuning", seed=1))
        s.push("acme", "cls", make_prompt(tiny, "prompt_tuning", seed=2), **TASK_EXTRA)
        s.push("globex", "pt", make_prompt(tiny, "prompt_tuning", seed=3))
        s.push("globex", "secret", make_prompt(tiny, "deep_prompt", seed=4), promote="prod")
        try:
            yield s
        finally:
            s.running.stop()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """A throw-away PostgreSQL server for the whole session (unix socket in a temp folder)."""
    from tests.serving.pg import Cluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl, postgres) on PATH or in "
                    "/usr/lib/postgresql/*/bin: install the postgresql package (.ci/run does)")
    cluster = Cluster(bindir)
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster: Any) -> str:
    """A fresh empty database in the session's cluster."""
    return pg_cluster.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: Any, tmp_path: Path) -> str:
    """Where a store lives, once per backend: a directory, then a postgresql:// URL."""
    if request.param == "sqlite":
        return str(tmp_path / "store")
    return request.getfixturevalue("pg_url")
