"""The hot working set: a bounded LRU of materialized memories and one of loaded documents.

The record cache is updated on every committed change (local or remote), so a hit is never stale; it
is warmed on open with the most recent memories of the replica's channels. The document cache keeps
recently written pycrdt documents so a write does not re-parse the stored state.

Both are bounded by count and by approximate bytes (``Limits.record_cache_bytes``,
``Limits.doc_cache_bytes``): a few memories holding 1 MiB values must not fill memory that the
count bound sized for thousands of small ones. Sizes are measured cheaply, never by encoding: a
document counts its stored bytes (snapshot and tail, figures the engine keeps anyway) plus what Yrs
holds per block (:func:`doc_size`), a record written here its document's stored bytes and a little
per block (:func:`written_record_size`), and a record read from the store its strings plus what
Python holds per object (:func:`record_size`, one pass over what was just parsed).

A loaded document of many small entries is ~12x its stored bytes: each map entry is a Yrs block
with its key and a map of three strings (~830 bytes resident for a 70-byte entry). Charged by
stored bytes alone, 462 documents of 1,000 metadata keys and 1,000 tags held ~750 MB under a
64 MiB budget.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..document.memory import MemoryDoc
from ..document.records import Memory
from ..lru import LRU

__all__ = ["LRU", "DocCache", "MemoryCache", "doc_size", "record_size", "stored_size", "written_record_size"]

ENTRY_BYTES = 64
"""What a record or document costs besides its values (the objects that hold them), roughly."""
YRS_BLOCK_BYTES = 1024
"""What a loaded document holds per Yrs block besides its stored bytes (measured ~830 for a live
map entry of three short strings, ~200 for a deleted one; a 1 MiB text is one block)."""
_OBJECT_BYTES = 56
"""What Python holds for a string (besides its characters), a number, or an empty container."""
_SLOT_BYTES = 8
"""One slot of a list; a dict's slot costs more (:data:`_DICT_SLOT_BYTES`)."""
_DICT_SLOT_BYTES = 48
"""One entry of a dict: its share of the hash table (key, value, hash, spare room)."""


RECORD_BLOCK_BYTES = 128
"""What a record holds per block of its document besides the stored bytes (a value's object and
its dict or list slot; a record of 1,000 keys and 1,000 tags measured ~250 KB against ~140 KB
stored)."""


def doc_size(doc: MemoryDoc, blocks: int | None = None) -> int:
    """A document's approximate resident size: its stored snapshot and tail plus a fixed cost per
    Yrs block (``blocks``, default :meth:`MemoryDoc.blocks`: one per map entry or array element
    written, deleted ones included)."""
    return stored_size(doc) + YRS_BLOCK_BYTES * (doc.blocks() if blocks is None else blocks)


def written_record_size(doc: MemoryDoc, blocks: int) -> int:
    """What the record of a document just written is charged: its document's stored bytes plus a
    little per block (measuring the record would walk every value, or every message)."""
    return stored_size(doc) + RECORD_BLOCK_BYTES * blocks


def stored_size(doc: MemoryDoc) -> int:
    """The bytes of a document's stored snapshot and tail."""
    return ENTRY_BYTES + doc.snapshot_bytes + doc.tail_bytes


def record_size(memory: Memory) -> int:
    """A record's approximate size from its values (string lengths plus what Python holds per
    object and slot), in one pass over them."""
    size = ENTRY_BYTES + len(memory.id) + len(memory.created_at) + len(memory.updated_at)
    size += _value_size(memory.content) + _value_size(memory.metadata) + _value_size(memory.tags)
    if memory.embedding is not None:
        size += (_SLOT_BYTES + _OBJECT_BYTES) * len(memory.embedding)
    return size


def _value_size(value: Any) -> int:
    size = 0
    stack = [value]
    while stack:
        one = stack.pop()
        size += _OBJECT_BYTES
        if isinstance(one, str):
            size += len(one)
        elif isinstance(one, dict):
            size += (_DICT_SLOT_BYTES + _OBJECT_BYTES) * len(one) + sum(len(k) for k in one)
            stack.extend(one.values())
        elif isinstance(one, (list, tuple)):
            size += _SLOT_BYTES * len(one)
            stack.extend(one)
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
