"""The replica's working set: materialized records and loaded documents, in front of the store.

Both are LRUs bounded by count and by approximate bytes (:mod:`crdtmem.engine.cache`). A miss reads
the store; a commit updates both, only
after it is durable, so neither is ever ahead of the disk and both can be dropped at any time. The
store stays the single source of truth.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..document.memory import MemoryDoc
from ..document.records import Memory
from ..errors import DamagedMemory, MalformedPayload
from ..store.base import Store
from .cache import DocCache, MemoryCache, doc_size, written_record_size
from .quarantine import Quarantine


class WorkingSet:
    """Records (``records``) and documents (``docs``) by memory id. Use it from the replica's loop."""

    def __init__(
        self,
        store: Store,
        client_id: int,
        *,
        cache_size: int,
        doc_cache_size: int,
        cache_bytes: int | None = None,
        doc_cache_bytes: int | None = None,
        quarantine: Quarantine | None = None,
    ):
        self.records = MemoryCache(cache_size, cache_bytes)
        self.quarantine = quarantine if quarantine is not None else Quarantine()
        """Memories whose stored data does not read back: :meth:`record` and :meth:`doc` raise
        MemoryQuarantined for them."""
        self.docs = DocCache(doc_cache_size, doc_cache_bytes)
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
        self.records.warm(self.memories(records))

    def memories(self, records: Iterable[dict[str, Any]]) -> list[Memory]:
        """The memories of stored records, leaving out (and quarantining) those that do not read
        and those already quarantined."""
        memories = []
        for record in records:
            memory_id = str(record.get("id"))
            if memory_id in self.quarantine:
                continue
            try:
                memories.append(Memory.from_dict(record))
            except (KeyError, TypeError, ValueError) as exc:  # JSON, but not a record's
                self.quarantine.add(DamagedMemory(memory_id, f"its record does not read: {exc!r}"))
        return memories

    def record(self, memory_id: str) -> Memory | None:
        """The materialized memory, None if this replica does not hold it; raises MemoryQuarantined
        for a memory whose stored data does not read back."""
        self.quarantine.check(memory_id)
        cached = self.records.get(memory_id)
        if cached is not None:
            return cached
        try:
            stored = self._store.load_record(memory_id)
            if stored is None:
                return None
            memory = Memory.from_dict(stored)
        except DamagedMemory as exc:
            raise self.quarantine.add(exc) from exc
        except (KeyError, TypeError, ValueError) as exc:  # JSON, but not a record's
            raise self.quarantine.add(DamagedMemory(memory_id, f"its record does not read: {exc!r}")) from exc
        self.records.put(memory_id, memory)
        return memory

    def doc(self, memory_id: str) -> MemoryDoc | None:
        """The memory's document (the same object until it is evicted); None if it is not stored;
        raises MemoryQuarantined for one whose stored state does not read back."""
        self.quarantine.check(memory_id)
        doc = self.docs.get(memory_id)
        if doc is None:
            try:
                stored = self._store.load_doc(memory_id)
                if stored is None:
                    return None
                doc = MemoryDoc.from_parts(memory_id, stored.snapshot, stored.tail, self.client_id)
            except DamagedMemory as exc:
                raise self.quarantine.add(exc) from exc
            except MalformedPayload as exc:
                raise self.quarantine.add(DamagedMemory(memory_id, str(exc))) from exc
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
        doc.drop_delta()  # stored now
        blocks = doc.blocks()
        self.docs.put(memory_id, doc, doc_size(doc, blocks))
        self.records.put(memory_id, memory, written_record_size(doc, blocks))

    def forget(self, memory_ids: Iterable[str]) -> None:
        """Drop what a failed or interrupted change leaves uncertain: its documents (maybe
        half-edited) and records (maybe behind a commit that landed anyway); the store has the truth."""
        for memory_id in memory_ids:
            self.docs.discard(memory_id)
            self.records.discard(memory_id)
