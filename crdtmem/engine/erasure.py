"""Forgetting a memory: its content leaves this replica, and an erase marker takes it from the others.

::

    forget(id) ─▶ erase marker (a delta on the memory's channels, signed like any) + Commit.erase
      ─▶ one commit: record, state, conflicts, pending and decided deltas go; logged deltas become
         stubs (crdtmem.document.erasure) ─▶ caches dropped ─▶ the file scrubbed (Store.scrub)
      ─▶ a ``forgotten`` MemoryEvent (id and channels, no content) on the feed
      ─▶ the marker is pushed and pulled like any delta; the indexer deletes the point

A remote marker is authenticated like any delta (its origin signed it) and authorized like a
delete: its sender must be allowed to write every channel of the memory, the channels the memory
has here, or, for a memory not stored here, the channels the marker is logged on. A marker that
fails is decided against (it holds no content, so the decision may keep it). A marker that erases
a memory here gives the feed a ``forgotten`` event, as a local forget does.

Once a memory is forgotten here, every later delta of it is taken as a stub: its entries are
logged with no content, so the version vectors move past it and it cannot bring the content back.
A full copy (from a peer that has not heard of the marker yet) is authenticated like any delta
first. A stub has lost its content's signature; what justifies it is the memory's erase marker,
signed by a writer of the memory, which this replica holds or which came in the same payload
(exporters send a page's stubs with their memories' markers, :func:`with_markers`), and its
origin's header signature, which it keeps (:func:`~crdtmem.engine.trust.stub_refusal`; without
one, its sender must be allowed to vouch for the origin unsigned). A stub of a memory with no such
marker is refused as a forged delta: nothing of it is logged, so no vector moves for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..access import Principal, may_write_memory
from ..clock import HybridLogicalClock
from ..document.erasure import EMPTY_DEPS, EMPTY_UPDATE, is_marker, is_stub, marker_update
from ..errors import CrdtmemError, NotFound
from ..store.base import Commit, Decision, DeltaRecord, Store, stub_proof
from .locks import KeyedLocks
from .materialize import Materializer
from .publish import Forgetting, Publisher
from .signing import Keyring
from .snapshots import Snapshots
from .trust import authenticate, refusal, stub_refusal
from .waiting import Delivered, WaitingSet
from .workset import WorkingSet

log = logging.getLogger("crdtmem.erasure")


def stub_of(delta: DeltaRecord) -> DeltaRecord:
    """The delta with its content removed (what a forgotten memory's deltas become), keeping its
    origin's header signature as its proof."""
    proof = stub_proof(delta)
    return dataclasses.replace(delta, deps=EMPTY_DEPS, update=EMPTY_UPDATE, signature=None, header=proof)


def with_markers(store: Store, deltas: list[DeltaRecord], channels: Iterable[str]) -> list[DeltaRecord]:
    """``deltas`` (a page to send) preceded by the erase markers of the memories it has stubs of,
    so that every stub travels with what justifies it (a receiver refuses a stub without one)."""
    stubbed = {d.doc_id for d in deltas if is_stub(d.deps, d.update)}
    if not stubbed:
        return deltas
    sent = {d.uid for d in deltas}
    markers = [m for m in store.markers_of(stubbed, channels) if m.uid not in sent]
    return [*markers, *deltas] if markers else deltas


@dataclass
class Sorted:
    """An inbound payload's deltas after erasures took theirs."""

    fresh: list[DeltaRecord]
    relog: list[DeltaRecord]
    taken: int = 0
    """Markers applied, and deltas of forgotten memories logged as stubs."""
    refused: list[DeltaRecord] = field(default_factory=list)
    unauthenticated: int = 0


class Erasure:
    """Local and remote forgetting for one replica. Use it from the replica's loop."""

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
        self.counts: Counter[str] = Counter()
        """``forgotten`` (here or by a marker), ``dropped`` (deltas of forgotten memories taken as
        stubs), ``forged`` (stubs without a marker, copies that do not authenticate: refused),
        ``refused`` (markers decided against)."""

    async def forget(self, memory_id: str) -> None:
        """Forget a memory stored here (raises NotFound if it is not, or was forgotten)."""
        async with self._locks.hold([memory_id]):
            record = self._work.record(memory_id)
            if record is None or self._store.is_erased(memory_id):
                raise NotFound(f"no memory with id {memory_id!r} on replica {self._replica_id()}")
            origin, hlc = self._replica_id(), self._clock.now().encode()
            marker = DeltaRecord(
                f"{origin}:{hlc}",
                origin,
                memory_id,
                hlc,
                EMPTY_DEPS,
                marker_update(origin, hlc),
                record.channels,
            )
            await self._erase(memory_id, marker, record.channels)
        await self.scrub()

    async def take(
        self,
        fresh: Sequence[DeltaRecord],
        relog: Sequence[DeltaRecord],
        sender: Principal,
        keyring: Keyring | None,
        presented: Mapping[str, bytes],
    ) -> Sorted:
        """Apply the erase markers among ``fresh``, log the deltas of forgotten memories as stubs,
        and return the rest for the ordinary path."""
        markers = [d for d in fresh if is_marker(d.deps, d.update)]
        erased = self._store.is_erased
        if not markers and not any(erased(d.doc_id) or is_stub(d.deps, d.update) for d in (*fresh, *relog)):
            return Sorted(list(fresh), list(relog))
        out = Sorted([], [])
        own = self._replica_id()
        checked = authenticate(markers, sender, own, keyring, presented)
        out.unauthenticated += len(checked.refused)
        out.refused += [d for d, _ in checked.refused]
        scrub = False
        for marker in checked.accepted:
            if await self._take_marker(marker, sender):
                out.taken += 1
                scrub = True
            else:
                out.refused.append(marker)
        stubs: list[DeltaRecord] = []
        uids = {m.uid for m in markers}
        stored = {d.uid for d in relog}
        for delta in (*fresh, *relog):
            if delta.uid in uids:
                continue
            reason = None
            if erased(delta.doc_id):
                reason = refusal(delta.origin, sender, own)
                if reason is None and is_stub(delta.deps, delta.update):  # its origin's header signature
                    reason = stub_refusal(delta, sender, keyring, presented)
                elif reason is None:  # a full copy: taken as a stub only if its origin really wrote it
                    copy = authenticate([delta], sender, own, keyring, presented)
                    reason = copy.refused[0][1] if copy.refused else None
                if reason is None:
                    stubs.append(stub_of(delta))
            elif is_stub(delta.deps, delta.update):
                reason = (
                    f"delta {delta.uid} is a stub (a forgotten memory's delta without content), but no "
                    f"erase marker of memory {delta.doc_id!r} is held here or came with it"
                )
            elif delta.uid in stored:
                out.relog.append(delta)
            else:
                out.fresh.append(delta)
            if reason is not None:
                out.unauthenticated += 1
                out.refused.append(delta)
                self.counts["forged"] += 1
                log.warning("refused delta %s from %s: %s", delta.uid, sender.name, reason)
        if stubs:
            self.counts["dropped"] += len(stubs)
            out.taken += len(stubs)
            await self._publisher.commit(Commit(deltas=stubs), {}, {}, {})
        if scrub:
            await self.scrub()
        return out

    def split_late(
        self, fresh: list[Delivered], relog: list[Delivered]
    ) -> tuple[list[Delivered], list[Delivered], list[DeltaRecord]]:
        """Take out the deltas of memories forgotten since the payload was sorted (their locks held)."""
        erased = self._store.is_erased
        late = [item.delta for item in (*fresh, *relog) if erased(item.delta.doc_id)]
        if not late:
            return fresh, relog, []
        return (
            [item for item in fresh if not erased(item.delta.doc_id)],
            [item for item in relog if not erased(item.delta.doc_id)],
            late,
        )

    async def take_late(self, late: list[DeltaRecord]) -> None:
        """Log authenticated deltas of forgotten memories as stubs."""
        self.counts["dropped"] += len(late)
        await self._publisher.commit(Commit(deltas=[stub_of(d) for d in late]), {}, {}, {})

    async def _take_marker(self, marker: DeltaRecord, sender: Principal) -> bool:
        doc_id = marker.doc_id
        async with self._locks.hold([doc_id]):
            stored = self._work.record(doc_id)
            channels = stored.channels if stored is not None else tuple(marker.seqs)
            reason = None
            if not set(marker.seqs) <= set(channels):
                reason = f"erase marker {marker.uid} is logged on channels memory {doc_id} is not on"
            elif not may_write_memory(sender, channels):
                reason = f"{sender.name} may not forget memory {doc_id}, or there is no such memory"
            if reason is not None:
                self.counts["refused"] += 1
                log.warning("refused erase marker %s from %s: %s", marker.uid, sender.name, reason)
                decision = Decision(marker, "denied", sender.name, sender.fingerprint, reason)
                await self._publisher.commit(Commit(decided=[decision]), {}, {}, {})
                return False
            if self._store.is_erased(doc_id):  # forgotten here already: the marker is only logged
                await self._publisher.commit(Commit(deltas=[marker]), {}, {}, {})
                return True
            await self._erase(doc_id, marker, channels)
            return True

    async def _erase(self, doc_id: str, marker: DeltaRecord, channels: tuple[str, ...]) -> None:
        """Commit the erasure of ``doc_id`` (on ``channels`` here) with its marker (the memory's lock
        held); the feed gets its ``forgotten`` event."""
        waiting = [item.delta.uid for item in self._waiting.of_memories({doc_id})]
        work = Commit(deltas=[marker], erase=[doc_id], pending_drop=waiting)

        def landed() -> None:
            self._waiting.settle([], waiting)
            self._work.forget([doc_id])
            self._materializer.taken(doc_id)
            self._snapshots.discard(doc_id)
            self.counts["forgotten"] += 1

        gone = {doc_id: Forgetting(channels, marker.origin, marker.hlc)}
        await self._publisher.commit(work, {}, {}, {}, after=landed, forgetting=gone)
        log.info("forgot memory %s (marker %s)", doc_id, marker.uid)

    async def scrub(self) -> None:
        """Make the store's file keep no copy of what was erased (off the loop)."""
        try:
            await asyncio.to_thread(self._store.scrub)
        except CrdtmemError as exc:  # the next erasure (or the next open) scrubs again
            log.warning("scrubbing after an erasure failed: %s", exc)
