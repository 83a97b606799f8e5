"""The hot working set: a bounded LRU of materialized memories and one of loaded documents.

The record cache is updated on every committed change (local or remote), so a hit is never stale; it
is warmed on open with the most recent memories of the replica's channels. The document cache keeps
recently written pycrdt documents so a write does not re-parse the stored state.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..document.records import Memory
from ..lru import LRU

__all__ = ["LRU", "MemoryCache"]


class MemoryCache(LRU[Memory]):
    """Materialized memories by id."""

    def warm(self, memories: Iterable[Memory]) -> int:
        """Load memories oldest first so the most recent end up most recently used."""
        loaded = list(memories)
        for memory in reversed(loaded):
            self.put(memory.id, memory)
        return len(loaded)
