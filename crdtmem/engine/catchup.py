"""Catching up from document states: for a peer whose vector is below the horizon of the log.

Once compaction folded entries (:mod:`crdtmem.engine.compaction`), the log cannot give them to a
peer that lacks them. Such a peer gets *states pages* instead (``docs/protocol.md`` §7.10; the
format, its signature and who may serve one: :mod:`crdtmem.engine.statepages`): every document of
the channels, in id order (which changed since the peer's vector cannot be told once the log is
folded), with the vectors the states cover (``covers``, read before the first state) and, on the
last page, the channels' erase markers.

The receiver takes a page only from a state server it trusts, signed by that server
(:func:`~crdtmem.engine.statepages.page_refusal`). It merges each state into its document
(``apply_update``: idempotent), checks the memory like a delta (its id, unchanged channels, on one
of the page's channels, and that the sender may write every one of them), stores it as the
document's snapshot, and, on the last page, raises its vectors (and its own horizon) to ``covers``:
the states of all pages hold everything those vectors claim, because they were read after the
vectors. Only entries of origins the sender may introduce count, never this replica's own. A
partial server's covers also name its own entries on channels it logs on but does not sync
(:func:`~crdtmem.engine.statepages.own_covers`); those count only for the server's origin. Then it
pulls deltas from ``covers`` on as usual.

A state folds many origins' deltas, so it is the server's word, not its origins': a trusted
server can put any content into the memories it may write and claim covered entries of the
origins it may relay (the receiver then never asks for those deltas), as ``docs/operating.md``
("Security model") spells out; nobody else can, since the page is signed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..access import OPEN, Principal, may_write_memory
from ..clock import Hlc, HybridLogicalClock
from ..document.memory import MemoryDoc
from ..document.records import Memory
from ..errors import CrdtmemError, MalformedPayload
from ..store.base import Commit, DeltaRecord, DocWrite, Snapshot, Store, VersionVector, behind
from .changes import doc_write
from .locks import KeyedLocks
from .materialize import Materializer
from .publish import Publisher
from .statepages import VERSION as STATES_VERSION
from .statepages import VERSIONS as STATES_VERSIONS
from .statepages import StatesPage, decode_states, export_states, is_states
from .workset import WorkingSet

__all__ = [
    "BATCH",
    "STATES_VERSION",
    "STATES_VERSIONS",
    "CatchUp",
    "StatesPage",
    "decode_states",
    "export_states",
    "is_behind",
    "is_states",
]

log = logging.getLogger("crdtmem.catchup")

BATCH = 64
"""Documents merged and committed together."""


def is_behind(store: Store, vectors: dict[str, VersionVector], channels: Sequence[str]) -> bool:
    """Whether a peer at ``vectors`` misses folded entries of any of ``channels``."""
    return any(behind(store.horizon(c), vectors.get(c, {})) for c in channels)


class CatchUp:
    """Applies states pages to one replica. Use it from the replica's loop."""

    def __init__(
        self,
        *,
        store: Store,
        work: WorkingSet,
        locks: KeyedLocks,
        publisher: Publisher,
        materializer: Materializer,
        clock: HybridLogicalClock,
        subscribed: Any,
        replica_id: Callable[[], str] = lambda: "",
    ):
        self._store = store
        self._work = work
        self._locks = locks
        self._publisher = publisher
        self._materializer = materializer
        self._clock = clock
        self._subscribed = subscribed
        self._replica_id = replica_id
        self.rejected = 0
        self.pages = 0
        self.refused_pages = 0
        """States pages refused whole (an untrusted server, a signature that does not verify)."""

    async def apply(self, page: StatesPage, sender: Principal | None) -> tuple[int, int]:
        """Merge the page's states and, on its last page, take its covers; returns (memories
        changed, memories refused)."""
        sender = sender or OPEN
        channels = [c for c in page.channels if self._subscribed(c)]
        changed = refused = 0
        for start in range(0, len(page.states), BATCH):
            batch = [(i, s) for i, s in page.states[start : start + BATCH] if not self._store.is_erased(i)]
            done, bad = await self._merge(batch, channels, sender, page.sender)
            changed, refused = changed + done, refused + bad
        if page.next is None:  # entries of origins the sender may relay, never this replica's own
            own = self._replica_id()
            covers = {
                c: {o: seq for o, seq in v.items() if o != own and sender.may_introduce(o)}
                for c, v in page.covers.items()
                if c in channels and sender.may_write(c)
            }
            for c, v in page.covers.items():  # a partial server's own entries on channels it does not sync
                if c not in page.channels and self._subscribed(c) and sender.may_write(c):
                    mine = {
                        o: seq for o, seq in v.items() if o == page.sender != own and sender.may_introduce(o)
                    }
                    covers[c] = mine
            covers = {c: v for c, v in covers.items() if v}
            if covers:
                await self._publisher.commit(Commit(covers=covers), {}, {}, {})
        self.pages += 1
        self.rejected += refused
        return changed, refused

    async def _merge(
        self, batch: list[tuple[str, bytes]], channels: list[str], sender: Principal, origin: str
    ) -> tuple[int, int]:
        ids = [doc_id for doc_id, _ in batch]
        refused = 0
        async with self._locks.hold(ids):
            writes: list[DocWrite] = []
            carried: list[DeltaRecord] = []
            own = self._replica_id()
            docs: dict[str, tuple[MemoryDoc, Memory]] = {}
            before: dict[str, Memory | None] = {}
            for doc_id, state in batch:
                try:
                    prior = self._materializer.before(doc_id)
                    doc = self._work.doc_to_merge(doc_id)
                    doc.merge_state(state, carry_as=own)  # across epochs too (crdtmem.document.epoch)
                    write, memory = doc_write(doc, expected_id=doc_id, before=prior)
                    if prior is not None and set(prior.channels) != set(memory.channels):
                        raise MalformedPayload(f"the state of {doc_id} moves it to other channels")
                    if not set(memory.channels) & set(channels):
                        raise MalformedPayload(f"memory {doc_id} is on none of the page's channels")
                    if not may_write_memory(sender, memory.channels):
                        raise MalformedPayload(f"{sender.name} may not write memory {doc_id}")
                    self._clock.check(Hlc.decode(write.updated_hlc))
                except CrdtmemError as exc:
                    self._work.forget([doc_id])
                    refused += 1
                    log.warning("refused the state of memory %s from %s: %s", doc_id, sender.name, exc)
                    continue
                writes.append(write)
                docs[doc_id] = (doc, memory)
                change, doc.carried = doc.carried, None
                if change is not None:  # this replica's changes, carried over a rebase (a local delta)
                    hlc = self._clock.now().encode()
                    carried.append(
                        DeltaRecord(
                            f"{own}:{hlc}", own, doc_id, hlc, change.deps, change.update, memory.channels
                        )
                    )
                before[doc_id] = prior
            if not writes:
                return 0, refused
            snaps = [Snapshot(i, doc.state(), doc.stored_upto) for i, (doc, _) in docs.items()]
            fresh = [i for i in docs if i in self._materializer]
            work = Commit(deltas=carried, docs=writes, states=snaps, fresh=fresh)

            def landed() -> None:
                for snap in snaps:
                    doc = docs[snap.doc_id][0]
                    doc.tail_deltas = doc.tail_bytes = 0
                    doc.snapshot_bytes = len(snap.state)
                for doc_id in fresh:
                    self._materializer.taken(doc_id)

            origins = {i: origin for i in docs} | {d.doc_id: own for d in carried}
            await self._publisher.commit(work, docs, before, origins, after=landed)
        return len(writes), refused
