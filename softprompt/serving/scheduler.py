"""Who runs in the next step: fair admission between tenants under row, KV and share limits, and the per-step
token budget split between decoding rows and prefill chunks.

Admission is round-robin over tenants with waiting work, one row at a time, so a tenant that queued a thousand
rows (a wide classify, a flood of long generations) gets one row in for every row of each other tenant. A tenant
never holds more than `tenant_share` of the running rows or of the KV pool, which leaves room for the next
tenant's request to start at the next step. The budget: every decoding row feeds one token; prefilling rows
share what is left, interleaved by tenant, in chunks (a long prompt never stalls decoding).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from softprompt.model.inject import PromptParts


@dataclass(eq=False)
class Row:
    """One running row: a generation, or one candidate word of a classify input."""

    job: Any  # the engine's Job
    parts: PromptParts | None
    inputs: torch.Tensor  # [n,H] own prefill embeddings (soft tokens + prompt [+ candidate word])
    blocks: list[int]
    tenant: str
    fed: int = 0  # own tokens in the pool
    next_token: int | None = None  # the token the next decode step feeds
    generator: torch.Generator | None = None
    word: list[int] | None = None  # classify: the candidate's tokens (the last len(word) of the inputs)
    index: int = 0  # classify: which candidate of the job
    logp: float = 0.0

    @property
    def prefilling(self) -> bool:
        return self.fed < self.inputs.shape[0]


@dataclass
class Limits:
    max_rows: int
    max_step_tokens: int
    tenant_share: float
    pool_blocks: int

    @property
    def tenant_rows(self) -> int:
        return max(1, int(self.tenant_share * self.max_rows))

    @property
    def tenant_blocks(self) -> int:
        return max(1, int(self.tenant_share * self.pool_blocks))


@dataclass
class Waiting:
    """Jobs waiting to start, one FIFO per tenant, served round-robin."""

    queues: OrderedDict[str, deque] = field(default_factory=OrderedDict)
    count: int = 0

    def add(self, tenant: str, job: Any) -> None:
        self.queues.setdefault(tenant, deque()).append(job)
        self.count += 1

    def pop(self, tenant: str) -> Any:
        q = self.queues[tenant]
        job = q.popleft()
        if not q:
            del self.queues[tenant]
        self.count -= 1
        return job

    def rotate(self) -> list[str]:
        """Tenants in this step's order; the first moves to the back for the next step."""
        order = list(self.queues)
        if order:
            self.queues.move_to_end(order[0])
        return order

    def drain(self) -> Iterator[Any]:
        for q in self.queues.values():
            yield from q
        self.queues.clear()
        self.count = 0


def interleave(rows: list[Row]) -> list[Row]:
    """Rows in admission order, re-ordered so tenants alternate: A1 B1 C1 A2 B2 A3 ..."""
    by: OrderedDict[str, deque] = OrderedDict()
    for r in rows:
        by.setdefault(r.tenant, deque()).append(r)
    out = []
    while by:
        for t in list(by):
            out.append(by[t].popleft())
            if not by[t]:
                del by[t]
    return out


def plan_chunks(prefilling: list[Row], budget: int) -> list[tuple[Row, int]]:
    """Split `budget` tokens between prefilling rows (tenants interleaved): an equal share first, leftovers in
    order. -> (row, tokens to feed this step), rows that get nothing left out."""
    rows = interleave(prefilling)
    if not rows or budget <= 0:
        return []
    share = max(1, budget // len(rows))
    got = {}
    for r in rows:
        c = min(r.inputs.shape[0] - r.fed, share, budget)
        if c <= 0:
            break
        got[r] = c
        budget -= c
    for r in rows:
        if budget <= 0:
            break
        extra = min(r.inputs.shape[0] - r.fed - got.get(r, 0), budget)
        if extra > 0:
            got[r] = got.get(r, 0) + extra
            budget -= extra
    return [(r, got[r]) for r in rows if r in got]
