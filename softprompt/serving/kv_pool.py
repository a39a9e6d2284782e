"""The KV pool: keys and values of every running row, in fixed-size blocks preallocated from a byte budget.

One tensor per kind holds every layer: keys and values are [layers, blocks * block_size, kv_heads, head_dim] in
the model's dtype, on the model's device. A row owns a list of blocks (its block table) for the tokens it feeds
itself (soft tokens, prompt, generated tokens); a task version's K/V prefix is never copied here: it stays once
in the prompt table and every row that uses it reads it from there. Block 0 is scratch: padding writes land in
it and it is never handed to a row.
"""

from __future__ import annotations

from typing import Any

import torch

from softprompt.errors import InputError


class KVPool:
    def __init__(self, base: Any, nbytes: int, block_size: int = 16):
        f = base.facts
        self.layers, self.kv_heads, self.head_dim = f.num_layers, f.kv_heads, f.head_dim
        self.block_size = block_size
        elem = torch.empty((), dtype=base.dtype).element_size()
        self.bytes_per_token = 2 * self.layers * self.kv_heads * self.head_dim * elem
        """Bytes one token of one row takes in the pool (keys and values of every layer)."""
        self.num_blocks = nbytes // (block_size * self.bytes_per_token)
        if self.num_blocks < 2:
            raise InputError(f"kv_cache_bytes={nbytes}: holds {self.num_blocks} blocks of {block_size} tokens "
                             f"({self.bytes_per_token} bytes per token on this model); give at least "
                             f"{2 * block_size * self.bytes_per_token} with --kv-cache-bytes")
        shape = (self.layers, self.num_blocks * block_size, self.kv_heads, self.head_dim)
        self.keys = torch.zeros(shape, dtype=base.dtype, device=base.device)
        self.values = torch.zeros(shape, dtype=base.dtype, device=base.device)
        self._free = list(range(self.num_blocks - 1, 0, -1))  # block 0 is scratch

    @property
    def usable_blocks(self) -> int:
        return self.num_blocks - 1

    @property
    def used_blocks(self) -> int:
        return self.usable_blocks - len(self._free)

    @property
    def free_blocks(self) -> int:
        return len(self._free)

    @property
    def nbytes(self) -> int:
        return self.num_blocks * self.block_size * self.bytes_per_token

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def allocate(self, tokens: int) -> list[int] | None:
        """Blocks for `tokens` tokens, or None (nothing taken) when the pool has too few free."""
        n = self.blocks_for(tokens)
        if n > len(self._free):
            return None
        return [self._free.pop() for _ in range(n)]

    def free(self, blocks: list[int]) -> None:
        self._free.extend(reversed(blocks))
        blocks.clear()

    def block_table(self, tables: list[list[int]]) -> torch.Tensor:
        """Rows' block lists -> [B, max_blocks] (padded with the scratch block 0) on the pool's device."""
        width = max(1, max(len(t) for t in tables))
        return torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.long, device=self.keys.device)

    def slots(self, table: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Flat pool index of each row's own token `pos` [B,T] through its block table [B,nb] -> [B,T]."""
        blk = table.gather(1, (pos // self.block_size).clamp(max=table.shape[1] - 1))
        return blk * self.block_size + pos % self.block_size
