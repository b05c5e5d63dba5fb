"""Prefix cache: an LRU of chained block hashes (like vLLM's automatic prefix caching).

A request's cached prefix is the run of leading blocks whose hashes are in the LRU; like
vLLM, at least the last prompt token is always recomputed, so at most
(prompt_tokens - 1) // block_size blocks can hit.
"""

from __future__ import annotations

from collections import OrderedDict


class PrefixCache:
    def __init__(self, capacity_blocks: int) -> None:
        self.capacity = max(0, int(capacity_blocks))
        self._lru: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._lru)

    def clear(self) -> None:
        self._lru.clear()

    def match(self, hashes: list[int], max_blocks: int) -> int:
        """Number of leading blocks cached (touched as recently used); at most max_blocks."""
        if not self.capacity:
            return 0
        lru = self._lru
        n = 0
        for h in hashes[:max_blocks]:
            if h not in lru:
                break
            lru.move_to_end(h)
            n += 1
        return n

    def insert(self, hashes: list[int]) -> None:
        if not self.capacity:
            return
        lru = self._lru
        for h in hashes:
            if h in lru:
                lru.move_to_end(h)
            else:
                lru[h] = None
        while len(lru) > self.capacity:
            lru.popitem(last=False)
