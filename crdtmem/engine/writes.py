"""The local write path: one change to one memory, from its lock to its acknowledged commit.

    Replica.add/update/... ─▶ lock the memory ─▶ MemoryDoc change (one Yrs transaction) ─▶ Delta
      ─▶ the bounds of what a memory holds ─▶ Publisher.commit (durable) ─▶ the memory after it

:class:`LocalWrites` holds the parts this path uses; :class:`~crdtmem.engine.replica.Replica` builds
it and turns each write method into a :data:`Change`.
"""

from __future__ import annotations

from collections.abc import Callable, Sized

from ..clock import HybridLogicalClock
from ..document.memory import MemoryDoc
from ..document.records import Memory
from ..errors import NotFound
from ..limits import Limits
from ..store.base import Commit, DeltaRecord, Store
from .changes import Dots, doc_write
from .locks import KeyedLocks
from .materialize import Materializer
from .publish import Publisher
from .workset import WorkingSet

Change = Callable[[MemoryDoc, Dots], Memory | None]
"""One local change to a document; a create returns the record it made (see MemoryDoc.create)."""


class LocalWrites:
    """Applies local changes and commits them, one memory at a time (its lock held throughout)."""

    def __init__(
        self,
        *,
        store: Store,
        work: WorkingSet,
        locks: KeyedLocks,
        materializer: Materializer,
        publisher: Publisher,
        clock: HybridLogicalClock,
        limits: Limits,
        replica_id: Callable[[], str],
    ):
        self._store = store
        self._work = work
        self._locks = locks
        self._materializer = materializer
        self._publisher = publisher
        self._clock = clock
        self._limits = limits
        self._replica_id = replica_id

    async def write(self, memory_id: str, change: Change, *, new: bool, check_exists: bool) -> Memory:
        """Make ``change`` to the memory under its lock and commit it; returns the memory after it.

        Args:
            new: a create (the document may not exist yet).
            check_exists: a create of a chosen id, which may find the id's deleted memory.
        """
        replica_id = self._replica_id()
        async with self._locks.hold([memory_id]):
            if self._store.is_erased(memory_id):
                raise NotFound(f"memory {memory_id!r} was forgotten here; its id cannot be used again")
            # a create of a chosen id may find the id's deleted memory: the change revives it
            existing = self._work.doc(memory_id) if not new or check_exists else None
            if existing is not None:
                doc = existing
            elif new:
                doc = self._work.new_doc(memory_id)
            else:
                raise NotFound(f"no memory with id {memory_id!r} on replica {replica_id}")
            stale = memory_id in self._materializer  # a batch changed it; its record is behind
            before = None if existing is None else self._materializer.before(memory_id)
            dots = Dots(replica_id, self._clock)
            try:
                with doc.change():
                    created = change(doc, dots)
            except BaseException:
                self._work.forget([memory_id])  # a failed change may have left partial edits
                raise
            if dots.last is None and not stale:  # nothing was written (e.g. an empty add_items)
                return before or doc.materialize()
            try:
                write, memory = doc_write(doc, before=before, created=created)
                self._check_holds(memory, before)
            except BaseException:
                self._work.forget([memory_id])
                raise
            deltas = []
            if dots.last is not None:
                hlc = dots.last.hlc
                deltas.append(
                    DeltaRecord(
                        f"{replica_id}:{hlc}",
                        replica_id,
                        memory_id,
                        hlc,
                        doc.last_delta.deps,
                        doc.last_delta.update,
                        memory.channels,
                    )
                )
            events = await self._publisher.commit(
                Commit(deltas=deltas, docs=[write], fresh=[memory_id] if stale else []),
                {memory_id: (doc, memory)},
                {memory_id: before},
                {memory_id: replica_id},
                after=lambda: self._materializer.taken(memory_id),
            )
            committed = events[0].memory
            assert committed is not None  # a change's event carries its memory
            return committed

    def _check_holds(self, memory: Memory, before: Memory | None) -> None:
        """A local write may not take a memory past the bounds of what it holds; a memory already
        past them (merged from a replica with larger bounds) may still shrink or stay as it is."""
        counts = _holds(memory)
        earlier = _holds(before) if before is not None else (0, 0, 0, 0)
        self._limits.check_memory(*(n if n > e else 0 for n, e in zip(counts, earlier, strict=True)))


def _holds(memory: Memory) -> tuple[int, int, int, int]:
    """(metadata keys, tags, list items, messages) of a memory."""
    content = memory.content
    sized = isinstance(content, Sized) and not isinstance(content, str)
    items = len(content) if memory.kind == "list" and sized else 0
    messages = len(content) if memory.kind == "conversation" and sized else 0
    return len(memory.metadata), len(memory.tags), items, messages
