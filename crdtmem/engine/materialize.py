"""Records materialized after the commit: a batch of remote deltas is stored first, read later.

A remote apply that touches many memories (a catch-up, a lazy batch) stores the deltas, advances
the vectors and commits without reading the documents back: it marks them stale, in the same
transaction (``Commit.stale``). Reading a document back (its record, conflicts, the columns queries
filter on) and the event that announces it then happen here, in one commit for many memories, when
the replica has no apply in flight, or sooner when a read needs them, or when too many wait. A memory
changed by several payloads of one catch-up is read back once.

Reads stay current: ``Replica.get`` of a stale memory, and ``list``/``conflicts`` while any is stale,
materialize first, so a read never returns a state older than a write already acknowledged. A local
write to a stale memory reads it back itself and clears the mark. After a crash the store's stale
marks name what to materialize again (the deltas are durable; only the records were behind).

The events of a materialization are one per memory, classified against the record last published
(``before``), with the origin of the last delta applied: a memory changed by three payloads before
it was read back gets one event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..clock import Hlc, HybridLogicalClock
from ..document.memory import MemoryDoc
from ..document.records import Memory
from ..errors import ClockSkewError, CrdtmemError, MemoryQuarantined
from ..store.base import Commit, DocWrite
from .changes import doc_write
from .locks import KeyedLocks
from .publish import Publisher
from .workset import WorkingSet

log = logging.getLogger("crdtmem.materialize")

BATCH = 512
"""Memories read back per commit."""
MAX_WAITING = 4_096
"""Stale memories at most: an apply that would leave more materializes first."""


@dataclass(slots=True)
class _Stale:
    before: Memory | None
    """The record last published (what the next event is classified against)."""
    origin: str
    """Whose delta was applied last."""


class Materializer:
    """The stale memories of one replica and their materialization. Use it from the replica's loop."""

    def __init__(
        self,
        work: WorkingSet,
        locks: KeyedLocks,
        publisher: Publisher,
        clock: HybridLogicalClock,
        busy: Callable[[], bool],
    ):
        self._work = work
        self._locks = locks
        self._publisher = publisher
        self._clock = clock
        self._busy = busy
        self.waiting: dict[str, _Stale] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.unreadable = 0
        """Memories a batch left unreadable (a foreign writer's entries; their last record stays)."""

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self.waiting

    def before(self, doc_id: str, record: Callable[[str], Memory | None] | None = None) -> Memory | None:
        """The record last published for ``doc_id`` (the one its next event compares with);
        ``record``: how to read a stored record (default: the working set's)."""
        stale = self.waiting.get(doc_id)
        if stale is not None:
            return stale.before
        return record(doc_id) if record is not None else self._work.record(doc_id)

    def load(self, doc_ids: Iterable[str]) -> None:
        """Take up what the store marked stale (on open): materialized soon after."""
        for doc_id in doc_ids:
            try:
                before = self._work.record(doc_id)
            except MemoryQuarantined:  # its stale mark stays in the store until it is repaired
                continue
            self.waiting[doc_id] = _Stale(before, "")
        if self.waiting:
            self.kick()

    def mark(self, origins: dict[str, str], before: dict[str, Memory | None]) -> None:
        """A commit left these memories stale (``origins``: the last delta applied to each)."""
        for doc_id, origin in origins.items():
            stale = self.waiting.get(doc_id)
            if stale is None:
                self.waiting[doc_id] = _Stale(before.get(doc_id), origin)
            else:
                stale.origin = origin
        self.kick()

    def taken(self, doc_id: str) -> None:
        """A commit (a local write, an apply that read it back) brought ``doc_id``'s record up to date."""
        self.waiting.pop(doc_id, None)

    def kick(self) -> None:
        """Run soon: when no apply is in flight (or now, if too many memories wait)."""
        self._wake.set()
        if self.waiting and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._run(), name="crdtmem-materialize")

    async def settle(self) -> None:
        """Materialize everything stale now."""
        while self.waiting:
            await self.flush()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while self.waiting:
            if self._busy() and len(self.waiting) < MAX_WAITING:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self.flush()
            except CrdtmemError as exc:  # the marks stay (durably too): retried when kicked again
                log.warning("materializing %d memories failed: %s", len(self.waiting), exc)
                return

    async def flush(self, only: Iterable[str] | None = None) -> None:
        """Read back the stale memories (``only`` these, if given) and commit their records."""
        wanted = sorted(self.waiting if only is None else (d for d in only if d in self.waiting))
        for start in range(0, len(wanted), BATCH):
            await self._flush(wanted[start : start + BATCH])

    async def _flush(self, batch: list[str]) -> None:
        async with self._locks.hold(batch):
            batch = [doc_id for doc_id in batch if doc_id in self.waiting]  # a write may have taken it
            writes: list[DocWrite] = []
            changed: dict[str, tuple[MemoryDoc, Memory]] = {}
            before: dict[str, Memory | None] = {}
            origins: dict[str, str] = {}
            aside: list[str] = []
            for doc_id in batch:
                stale = self.waiting[doc_id]
                try:
                    doc = self._work.doc(doc_id)
                except MemoryQuarantined:  # set aside; its stale mark stays until it is repaired
                    aside.append(doc_id)
                    continue
                if doc is None:
                    continue
                try:
                    write, memory = doc_write(doc, expected_id=doc_id, before=stale.before)
                except CrdtmemError as exc:
                    # only a foreign writer's entries do this, and a batch could not be refused for
                    # them after it was stored: the memory keeps its last readable record
                    self.unreadable += 1
                    log.error("memory %s does not read back after a batch apply: %s", doc_id, exc)
                    continue
                try:
                    self._clock.check(Hlc.decode(write.updated_hlc))
                except ClockSkewError as exc:  # reported, not refused: the deltas are stored
                    log.warning("memory %s holds a stamp ahead of this clock: %s", doc_id, exc)
                writes.append(write)
                changed[doc_id] = (doc, memory)
                before[doc_id] = stale.before
                if stale.origin:
                    origins[doc_id] = stale.origin
            work = Commit(docs=writes, fresh=[doc_id for doc_id in batch if doc_id not in aside])
            await self._publisher.commit(work, changed, before, origins)
            for doc_id in batch:
                self.waiting.pop(doc_id, None)
