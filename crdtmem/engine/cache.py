"""The hot working set: a bounded LRU of materialized memories and one of loaded documents.

The record cache is updated on every committed change (local or remote), so a hit is never stale; it
is warmed on open with the most recent memories of the replica's channels. The document cache keeps
recently written pycrdt documents so a write does not re-parse the stored state.

Both are bounded by count and by approximate bytes (``Limits.record_cache_bytes``,
``Limits.doc_cache_bytes``): a few memories holding 1 MiB values must not fill memory that the
count bound sized for thousands of small ones. Sizes are measured cheaply, never by encoding: a
document counts its stored bytes (snapshot and tail, figures the engine keeps anyway), a record
written here counts its document's, and a record read from the store the length of its strings
plus a few bytes per number and entry (:func:`record_size`, one pass over what was just parsed).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..document.memory import MemoryDoc
from ..document.records import Memory
from ..lru import LRU

__all__ = ["LRU", "DocCache", "MemoryCache", "doc_size", "record_size"]

ENTRY_BYTES = 64
"""What a record or document costs besides its values (the objects that hold them), roughly."""
_ITEM_BYTES = 8
"""What a number, a boolean, or one slot of a list or map costs besides its value, roughly."""


def doc_size(doc: MemoryDoc) -> int:
    """A document's approximate size: the bytes of its stored snapshot and tail."""
    return ENTRY_BYTES + doc.snapshot_bytes + doc.tail_bytes


def record_size(memory: Memory) -> int:
    """A record's approximate size from its values (string lengths, a few bytes per other value),
    in one pass over them."""
    size = ENTRY_BYTES + len(memory.id) + len(memory.created_at) + len(memory.updated_at)
    size += _value_size(memory.content) + _value_size(memory.metadata) + _value_size(memory.tags)
    if memory.embedding is not None:
        size += _ITEM_BYTES * len(memory.embedding)
    return size


def _value_size(value: Any) -> int:
    size = 0
    stack = [value]
    while stack:
        one = stack.pop()
        if isinstance(one, str):
            size += len(one)
        elif isinstance(one, dict):
            size += _ITEM_BYTES * len(one) + sum(len(k) for k in one)
            stack.extend(one.values())
        elif isinstance(one, (list, tuple)):
            size += _ITEM_BYTES * len(one)
            stack.extend(one)
        else:
            size += _ITEM_BYTES
    return size


class MemoryCache(LRU[Memory]):
    """Materialized memories by id."""

    def __init__(self, capacity: int, max_bytes: int | None = None):
        super().__init__(capacity, max_bytes=max_bytes, size=record_size)

    def warm(self, memories: Iterable[Memory]) -> int:
        """Load memories oldest first so the most recent end up most recently used."""
        loaded = list(memories)
        for memory in reversed(loaded):
            self.put(memory.id, memory)
        return len(loaded)


class DocCache(LRU[MemoryDoc]):
    """Loaded documents by memory id."""

    def __init__(self, capacity: int, max_bytes: int | None = None):
        super().__init__(capacity, max_bytes=max_bytes, size=doc_size)
