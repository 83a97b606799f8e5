"""Snapshots of documents, taken off the acknowledgement path.

The store keeps a document as a snapshot plus the tail of deltas stored after it
(:mod:`crdtmem.store.base`): a commit writes only the change, never the whole state. Loading a
document replays its tail, so once the tail has grown past :data:`EVERY_DELTAS` deltas and an
eighth of the snapshot's bytes (:data:`SHARE`), or past as many bytes as the snapshot itself (and at
least :data:`MIN_BYTES`), a new snapshot folds it in.

That happens after the commit that crossed the line was acknowledged, in a task of its own: under
the memory's lock (so the document holds exactly what is committed, nothing in flight), the state
is encoded and committed as a :class:`~crdtmem.store.base.Snapshot` naming the last delta row it
folds. A snapshot that fails to commit changes nothing: the tail still holds everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable

from ..document.memory import MemoryDoc
from ..errors import CrdtmemError, MemoryQuarantined
from ..store.base import Commit, Snapshot
from .committer import GroupCommitter
from .locks import KeyedLocks
from .workset import WorkingSet

log = logging.getLogger("crdtmem.snapshots")

EVERY_DELTAS = 200
"""A document whose tail holds this many deltas gets a new snapshot, once that tail holds at least
1/:data:`SHARE` of the snapshot's bytes."""
SHARE = 8
"""Rewriting a 10,000-message conversation's 1.8 MB snapshot every 200 appends of ~240 B wrote 9 KB
of snapshot per append, 37 times the append itself. Waiting until the tail holds an eighth of the
snapshot bounds what snapshots add to a write at 8 times its delta, whatever the document's length,
and loading the document at the snapshot plus an eighth of its bytes in deltas."""
MIN_BYTES = 64 * 1024
"""... or whose tail holds this many bytes, and at least as many as its snapshot."""
BATCH = 64
"""Documents snapshotted per commit."""


class Snapshots:
    """Decides when a document needs a new snapshot and writes it. Use it from the replica's loop."""

    def __init__(
        self,
        committer: GroupCommitter,
        work: WorkingSet,
        locks: KeyedLocks,
        *,
        every_deltas: int = EVERY_DELTAS,
        min_bytes: int = MIN_BYTES,
        packer: Callable[[bytes], bytes | None] | None = None,
    ):
        self._committer = committer
        self._work = work
        self._locks = locks
        self.every_deltas = every_deltas
        self.min_bytes = min_bytes
        self._packer = packer
        """The store's own form of a state (``Snapshot.packed``), made on a worker thread."""
        self._wanted: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.taken = 0
        """Snapshots committed (for tests and status)."""

    def due(self, doc: MemoryDoc) -> bool:
        if doc.tail_deltas >= self.every_deltas and doc.tail_bytes * SHARE >= doc.snapshot_bytes:
            return True
        return doc.tail_bytes >= self.min_bytes and doc.tail_bytes >= doc.snapshot_bytes

    def committed(self, doc_id: str, doc: MemoryDoc) -> None:
        """A commit that changed ``doc`` landed: snapshot it soon if its tail is long enough."""
        if doc.tail_deltas and self.due(doc):
            self._wanted.add(doc_id)
            if self._task is None or self._task.done():
                self._task = asyncio.get_running_loop().create_task(self._run(), name="crdtmem-snapshots")

    def discard(self, doc_id: str) -> None:
        """``doc_id`` is gone (forgotten): no snapshot of it."""
        self._wanted.discard(doc_id)

    async def settle(self) -> None:
        """Wait until every snapshot asked for so far is written (or given up)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._wanted.clear()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        await asyncio.sleep(0)  # whoever committed goes on first
        while self._wanted:
            batch = sorted(self._wanted)[:BATCH]
            self._wanted.difference_update(batch)
            await self.take(batch)

    async def take(self, batch: list[str]) -> int:
        """Snapshot these documents now (those with a tail); returns how many were written."""
        taken: list[tuple[MemoryDoc, Snapshot, int, int]] = []
        async with self._locks.hold(batch):
            for doc_id in batch:
                # under the lock a document holds exactly what is committed (a failed change
                # evicts it before the lock is released)
                try:
                    doc = self._work.doc(doc_id)
                except MemoryQuarantined:  # reported where it was found; nothing to fold
                    continue
                if doc is None or not doc.tail_deltas:
                    continue
                snap = Snapshot(doc_id, doc.state(), doc.stored_upto)
                taken.append((doc, snap, doc.tail_deltas, doc.tail_bytes))
        if not taken:
            return 0
        snaps = [snap for _, snap, _, _ in taken]
        if self._packer is not None:  # the state is immutable bytes: no lock needed from here
            packer = self._packer
            snaps = await asyncio.to_thread(
                lambda: [dataclasses.replace(s, packed=packer(s.state)) for s in snaps]
            )
        try:
            await self._committer.submit(Commit(snapshots=snaps))
        except CrdtmemError as exc:  # the tail still holds everything; try again when it grows
            log.warning("snapshot of %d document(s) not written: %s", len(taken), exc)
            return 0
        for doc, snap, deltas, size in taken:  # deltas committed meanwhile stay in the tail
            doc.tail_deltas -= deltas
            doc.tail_bytes -= size
            doc.snapshot_bytes = len(snap.state)
        self.taken += len(taken)
        return len(taken)
