"""Rebasing memories whose documents are mostly tombstones, once the log behind them is folded.

::

    compact() ─▶ fold the log ─▶ documents folded whole, state >> live content (folded_states)
      ─▶ created here, nothing waiting, every known peer holds nothing this replica lacks
      ─▶ rebuild (crdtmem.document.epoch) ─▶ rebase entry (a delta on the memory's channels,
         signed like any) + the document replaced, in one commit ─▶ snapshot

A rebase entry replaces the memory's document on every replica that takes it
(:func:`crdtmem.engine.causal.apply_causally`). A replica that holds changes made concurrently on
the previous epoch carries its own over onto the new one as a local change
(:mod:`crdtmem.document.carry`); a delta of the previous epoch that meets the new one is superseded
(decided, never applied), since its origin carries it over (``docs/protocol.md`` §7.11).

Only the replica that created a memory rebases it, so two epochs of one memory are never made
concurrently. It rebases only a document whose every delta is folded (acknowledged by every known
peer, or past the retention), that no delta waits for, and whose channels' known peers reported
holding nothing this replica lacks: then every change a known peer had made is in the new epoch,
and only a change made after its last report can be concurrent with it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence

from ..clock import HybridLogicalClock
from ..document import epoch as epochs
from ..errors import CrdtmemError, MemoryQuarantined
from ..store.base import Commit, DeltaRecord, Store, VersionVector
from .changes import doc_write
from .locks import KeyedLocks
from .materialize import Materializer
from .publish import Publisher
from .snapshots import Snapshots
from .waiting import WaitingSet
from .workset import WorkingSet

log = logging.getLogger("crdtmem.rebase")

Acks = Sequence[dict[str, VersionVector]]
"""The vectors each known peer last reported holding, by channel."""

MIN_BYTES = 4096
"""A document's state is rebuilt only from this size on ..."""
RATIO = 4.0
"""... and only when it is this many times the size of the rebuilt one."""


class Rebaser:
    """Rebases this replica's long-overwritten memories. Use it from the replica's loop."""

    def __init__(
        self,
        *,
        store: Store,
        work: WorkingSet,
        locks: KeyedLocks,
        publisher: Publisher,
        materializer: Materializer,
        snapshots: Snapshots,
        waiting: WaitingSet,
        clock: HybridLogicalClock,
        replica_id: Callable[[], str],
    ):
        self._store = store
        self._work = work
        self._locks = locks
        self._publisher = publisher
        self._materializer = materializer
        self._snapshots = snapshots
        self._waiting = waiting
        self._clock = clock
        self._replica_id = replica_id
        self.min_bytes = MIN_BYTES
        self.ratio = RATIO
        self.rebased = 0
        """Memories rebased here."""

    async def run(self, peers: Acks) -> int:
        """Rebase every memory that qualifies (module docstring; ``peers``: the vectors each known
        peer last reported holding); returns how many were."""
        done = 0
        for doc_id, size in self._store.folded_states(self.min_bytes):
            try:
                done += await self.rebase(doc_id, peers, size)
            except MemoryQuarantined:  # reported where it was found
                continue
            except CrdtmemError as exc:  # the next compaction tries again
                log.warning("rebase of memory %s not written: %s", doc_id, exc)
        return done

    async def rebase(self, doc_id: str, peers: Acks, size: int | None = None) -> bool:
        """Rebase ``doc_id`` if it qualifies; returns whether it was."""
        own = self._replica_id()
        async with self._locks.hold([doc_id]):
            doc = self._work.doc(doc_id)
            record = self._work.record(doc_id)
            if doc is None or record is None or doc_id in self._materializer:
                return False
            if doc.tail_deltas or self._waiting.of_memories({doc_id}):
                return False
            if doc.created_by != own or not _peers_hold_nothing_more(self._store, peers, record.channels):
                return False
            state = size if size is not None else len(doc.state())
            live = len(json.dumps(record.to_dict(), default=str))  # about what a rebuild would hold
            if state < self.min_bytes or state < self.ratio * live:
                return False
            hlc = self._clock.now().encode()
            update, epoch = epochs.rebuild(doc.doc, doc_id, own, hlc)
            if state < self.ratio * len(update):
                return False
            entry = DeltaRecord(
                f"{own}:{hlc}", own, doc_id, hlc, epochs.rebase_deps(epoch.client), update, record.channels
            )
            doc.adopt(update)
            try:
                write, memory = doc_write(doc, expected_id=doc_id, before=record)
            except BaseException:
                self._work.forget([doc_id])
                raise
            await self._publisher.commit(
                Commit(deltas=[entry], docs=[write]), {doc_id: (doc, memory)}, {doc_id: record}, {doc_id: own}
            )
        await self._snapshots.take([doc_id])
        self.rebased += 1
        log.info("rebased memory %s to epoch %d: %d -> %d bytes", doc_id, epoch.n, state, len(update))
        return True


def _peers_hold_nothing_more(store: Store, peers: Acks, channels: tuple[str, ...]) -> bool:
    """Whether every known peer of these channels last reported holding nothing this replica lacks."""
    for channel in channels:
        here: VersionVector = store.version_vector(channel)
        for vectors in peers:
            theirs = vectors.get(channel, {})
            if any(seq > here.get(origin, 0) for origin, seq in theirs.items()):
                return False
    return True
