"""The replica's working set: materialized records and loaded documents, in front of the store.

Both are bounded LRUs (:mod:`crdtmem.engine.cache`). A miss reads the store; a commit updates both, only
after it is durable, so neither is ever ahead of the disk and both can be dropped at any time. The
store stays the single source of truth.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..document.memory import MemoryDoc
from ..document.records import Memory
from ..store.base import Store
from .cache import LRU, MemoryCache


class WorkingSet:
    """Records (``records``) and documents (``docs``) by memory id. Use it from the replica's loop."""

    def __init__(self, store: Store, client_id: int, *, cache_size: int, doc_cache_size: int):
        self.records = MemoryCache(cache_size)
        self.docs: LRU[MemoryDoc] = LRU(doc_cache_size)
        self.client_id = client_id
        """The Yrs client id of this process's writes (unique per process start)."""
        self._store = store

    def warm(self, channels: Iterable[str] | None, limit: int) -> None:
        """Load the ``limit`` most recently changed records (of ``channels``; None: all)."""
        if not limit or not self.records.capacity:
            return
        if channels is None:
            records = self._store.query_records(include_deleted=True, limit=limit)
        else:
            records = []
            for channel in channels:
                records += self._store.query_records(channel=channel, include_deleted=True, limit=limit)
            records.sort(key=lambda r: r["version"], reverse=True)
            records = records[:limit]
        self.records.warm(Memory.from_dict(r) for r in records)

    def record(self, memory_id: str) -> Memory | None:
        """The materialized memory, None if this replica does not hold it."""
        cached = self.records.get(memory_id)
        if cached is not None:
            return cached
        stored = self._store.load_record(memory_id)
        if stored is None:
            return None
        memory = Memory.from_dict(stored)
        self.records.put(memory_id, memory)
        return memory

    def doc(self, memory_id: str) -> MemoryDoc | None:
        """The memory's document (the same object until it is evicted); None if it is not stored."""
        doc = self.docs.get(memory_id)
        if doc is None:
            stored = self._store.load_doc(memory_id)
            if stored is None:
                return None
            doc = MemoryDoc.from_parts(memory_id, stored.snapshot, stored.tail, self.client_id)
            doc.stored_upto = max(doc.stored_upto, stored.upto)
            self.docs.put(memory_id, doc)
        return doc

    def doc_to_merge(self, memory_id: str) -> MemoryDoc:
        """:meth:`doc`, or an empty document to merge remote deltas into (kept like a loaded one)."""
        doc = self.doc(memory_id)
        if doc is None:
            doc = self.new_doc(memory_id)
            self.docs.put(memory_id, doc)
        return doc

    def new_doc(self, memory_id: str) -> MemoryDoc:
        return MemoryDoc.empty(memory_id, self.client_id)

    def committed(self, memory_id: str, doc: MemoryDoc, memory: Memory) -> None:
        """A change to ``memory_id`` is durable: its document and record are current."""
        self.docs.put(memory_id, doc)
        self.records.put(memory_id, memory)

    def forget(self, memory_ids: Iterable[str]) -> None:
        """Drop what a failed or interrupted change leaves uncertain: its documents (maybe
        half-edited) and records (maybe behind a commit that landed anyway); the store has the truth."""
        for memory_id in memory_ids:
            self.docs.discard(memory_id)
            self.records.discard(memory_id)
