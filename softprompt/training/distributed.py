"""Data-parallel processes for the one training loop: a `Group` the recipe asks for rank, shards and sums.

    torchrun --nproc-per-node 2 -m softprompt.cli.main train --data rotten_tomatoes --batch-size 16 --out runs/dp

Every process holds the frozen base and a replica of the prompt. Each global micro-batch (`batch_size` examples,
the stream the single-process recipe draws) is split into one contiguous shard per process; each process runs
forward and backward on its shard and the soft parameters' gradients are summed over processes (one all-reduce of
a flat buffer per step), so every process takes the same AdamW step. Backend: gloo on CPU, nccl on GPU (one
device per process, LOCAL_RANK). `torchrun` and `accelerate launch` both set RANK / WORLD_SIZE / MASTER_ADDR /
MASTER_PORT; `group()` joins the process group they describe.

Exactness: process r's loss is the mean over its shard's c_r units (examples, or answer tokens for generation),
weighted by c_r / N with N = sum of c_r over processes; summing the gradients gives the gradient of the global
mean loss, for any shard sizes (tests/test_ddp.py checks two processes against one).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist


def shard(batch: Sequence[Any], rank: int, world_size: int) -> list[Any]:
    """Rank `rank`'s contiguous part of `batch`; part sizes differ by at most one (the first parts are larger)."""
    n, w = len(batch), world_size
    start = rank * (n // w) + min(rank, n % w)
    return list(batch[start:start + n // w + (1 if rank < n % w else 0)])


class Group:
    """One process alone: every collective is the identity (the single-process recipe, bit for bit)."""

    rank, size = 0, 1

    @property
    def is_main(self) -> bool:
        """The process that writes files and prints."""
        return self.rank == 0

    def shard(self, batch: Sequence[Any]) -> list[Any]:
        return shard(batch, self.rank, self.size)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over processes."""
        return list(values)

    def sum_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum every parameter's gradient over processes, in place."""

    def broadcast(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Give every process rank 0's parameter values."""

    def barrier(self) -> None:
        """Wait for every process."""


class ProcessGroup(Group):
    """The initialised torch.distributed default group."""

    def __init__(self) -> None:
        self.rank, self.size = dist.get_rank(), dist.get_world_size()

    def _device(self) -> torch.device:
        nccl = dist.get_backend() == "nccl"
        return torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")

    def sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return t.tolist()

    def sum_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        for p in params:
            if p.grad is None:  # a process with an empty shard still joins, with zero gradient
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])  # [sum of numel]
        dist.all_reduce(flat)
        offset = 0
        for p in params:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
            offset += p.numel()

    def broadcast(self, params: Sequence[torch.nn.Parameter]) -> None:
        with torch.no_grad():
            for p in params:
                dist.broadcast(p.data, src=0)

    def barrier(self) -> None:
        dist.barrier()


def _leave() -> None:
    """Destroy the process group `group()` joined, while the interpreter is still whole. Destroying the last
    reference joins gloo's worker threads; a group left to the interpreter's finalisation aborts the process now and
    then (SIGABRT, "terminate called without an active exception") after a run that succeeded, when a worker that
    drops a finished collective's tensors finds the GIL gone."""
    if dist.is_initialized():
        dist.destroy_process_group()


def group() -> Group:
    """The current process group: the initialised one, else the one torchrun / accelerate launch describe in the
    environment (WORLD_SIZE > 1: joined here, gloo on CPU, nccl with CUDA, and left again at exit), else this
    process alone. A group the caller initialised is the caller's to destroy."""
    if dist.is_available() and dist.is_initialized():
        return ProcessGroup()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # torch.distributed.nn.functional evaluates `group.WORLD` into its functions' default arguments when it is
        # first imported. Imported after the group exists (transformers imports it, through torch.distributed.fsdp,
        # when a model loads), it would hold the group, and so its gloo worker threads, past `_leave` into the
        # interpreter's finalisation, where a worker that drops a finished collective's tensors needs the GIL and
        # aborts the process. Imported first, those defaults are None.
        import torch.distributed.nn.functional  # noqa: F401

        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
        atexit.register(_leave)
        return ProcessGroup()
    return Group()


@torch.no_grad()
def evaluate_sharded(base: Any, prompt: Any, task: Any, examples: Sequence[Any], grp: Group,
                     batch_size: int = 32) -> dict[str, float]:
    """`evaluate`'s metrics over `examples`, each process scoring every W-th example, summed over processes."""
    from softprompt.training.task import eval_sums, evaluate

    if grp.size == 1:
        return evaluate(base, prompt, task, examples, batch_size)
    loss_sum, correct, count = grp.sum(list(eval_sums(base, prompt, task, list(examples)[grp.rank::grp.size],
                                                      batch_size)))
    return {"accuracy": correct / max(count, 1), "loss": loss_sum / max(count, 1), "n": len(examples)}
