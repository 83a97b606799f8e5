"""Remote changes into a replica: a decoded payload ─▶ one commit.

::

    payload ─▶ clock check + triage (inbound.py) ─▶ origins authenticated (trust.py)
      ─▶ lock the memories ─▶ causal apply (causal.py) ─▶ read each touched document back
      ─▶ channel rules, each delta against its own sender (authorize.py) ─▶ one commit ─▶ events

A batch (more than :data:`READ_BACK_AT_MOST` memories) is not read back before its commit: each
touched document's header is checked (its id, kind and channels), the deltas are stored with the
memories marked stale, and :mod:`crdtmem.engine.materialize` reads them back afterwards, once for all
the payloads that touched them, and publishes their events then. What that defers: the check of the
newest stamp inside each memory (reported then, not refused), and the refusal of a memory a foreign
writer made unreadable (it keeps its last record; see ``docs/protocol.md`` §10).

Every delta travels with its sender (:class:`~crdtmem.engine.waiting.Delivered`): the rights of
whoever delivered it. Deltas whose dependencies have not arrived wait in :attr:`RemoteApply.waiting`
(mirrored durably in the store's pending table, bounded per sender and origin, dropped when too old)
and are applied by the payload that completes them, still checked against *their* sender's rights.
A delta for a memory stored here that its sender may not read waits the same way, exactly as one for
a memory not stored here (no answer tells the two apart), and is decided once it is applied.

When a unit fails its checks, its deltas are retried in smaller units, each committed alone
(:meth:`RemoteApply._apply_in_parts`), so that no delta can hold a memory or a stream back for good:

- a delta that waited for its dependencies and fails once they arrive is decided against, and the
  payload that completed it applies;
- a stream (``isolate``: a link, a pull, a push) applies a payload memory by memory, then delta by
  delta, and decides against the deltas that fail;
- without ``isolate`` (a payload handed to :meth:`Replica.apply`), the payload's own deltas must
  pass as a whole, or it is refused and nothing changes.

A delta decided against (:class:`~crdtmem.store.base.Decision`) is *denied* (its sender may not
write its memory) or *rejected* (it is wrong in itself). It is recorded durably, its entries logged
without a delta, so the version vectors move past it and the stream behind it flows; a resent copy
is a duplicate. A denied delta is examined again when its sender's rights change
(:meth:`RemoteApply.reexamine`). A delta stamped too far ahead is only refused: it may be fine once
the clocks agree.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..access import OPEN, AccessDenied, Principal
from ..clock import Hlc, HybridLogicalClock, WallClock
from ..document.epoch import is_rebase
from ..document.memory import MemoryDoc
from ..document.records import Memory
from ..errors import ClockSkewError, MemoryQuarantined, PayloadError
from ..events import MemoryEvent
from ..limits import DEFAULT_LIMITS, Limits
from ..store.base import Commit, Decision, DeltaRecord, DocWrite, Store
from . import payload as wire
from .authorize import check_units, unseen
from .causal import Known, apply_causally
from .changes import doc_write, header_channels
from .erasure import Erasure
from .inbound import ApplyResult, check_clocks, triage
from .locks import KeyedLocks
from .materialize import Materializer
from .publish import Publisher
from .signing import Keyring
from .trust import Authenticated, authenticate_in_slices
from .waiting import Delivered, Resolver, WaitingLimits, WaitingSet, to_store
from .workset import WorkingSet

log = logging.getLogger("crdtmem.remote")

READ_BACK_AT_MOST = 4
"""A payload touching more memories than this is a batch: its memories are read back after the
commit (:mod:`crdtmem.engine.materialize`), not before."""

SUPERSEDED = (
    "superseded: of an earlier epoch of a rebased memory, whose document holds its change or whose "
    "origin carries it over"
)

FOUND_ONCE_APPLIED = (PayloadError, AccessDenied)
"""Checks that can only fail once a delta is applied (its stamps, its memory's id and channels, the
sender's rights to that memory), as opposed to the payload's form, which is checked on decode."""


@dataclass
class _Outcome:
    applied: list[DeltaRecord] = field(default_factory=list)
    events: list[MemoryEvent] = field(default_factory=list)
    parked: list[str] = field(default_factory=list)
    refused: list[DeltaRecord] = field(default_factory=list)
    denied: int = 0

    def add(self, other: _Outcome) -> None:
        self.applied += other.applied
        self.events += other.events
        self.parked += other.parked
        self.refused += other.refused
        self.denied += other.denied


class RemoteApply:
    """Applies decoded payloads to one replica's documents and store. Use it from the replica's loop."""

    def __init__(
        self,
        *,
        clock: HybridLogicalClock,
        store: Store,
        work: WorkingSet,
        locks: KeyedLocks,
        subscribed: Callable[[str], bool],
        publisher: Publisher,
        replica_id: Callable[[], str],
        wall: WallClock,
        keyring: Callable[[], Keyring | None],
        limits: WaitingLimits | None = None,
        bounds: Limits = DEFAULT_LIMITS,
    ):
        self._clock = clock
        self.limits = bounds
        self._store = store
        self._work = work
        self._locks = locks
        self._subscribed = subscribed
        self._commit = publisher.commit
        self._replica_id = replica_id
        self._wall = wall
        self.erasure: Erasure | None = None
        """Takes erase markers and deltas of forgotten memories out of each payload first."""
        self.materializer: Materializer | None = None
        """Reads back the memories of a batch after its commit (None: always read back at once)."""
        self.read_back_at_most = READ_BACK_AT_MOST
        self._keyring = keyring
        self.waiting = WaitingSet(limits)
        """Deltas stored but waiting for their causal dependencies, with their senders."""
        self.counts: Counter[str] = Counter()
        """Deltas refused since start, by why: ``unauthenticated``, ``denied``, ``rejected``, ``clock``."""
        self.carried = 0
        """Rebases taken here over changes their epoch lacked, which were carried over onto them."""
        self._commits = 0  # applies committed: an apply that waited for its locks re-checks if it moved
        self._known: Known = {}  # of the deltas waiting after the last apply (causal.apply_causally)

    def status(self) -> dict[str, Any]:
        return {
            "pending": len(self.waiting),
            "pending_bytes": self.waiting.total_bytes(),
            "pending_by_sender": self.waiting.by_sender(),
            "pending_evicted": self.waiting.evicted,
            "refused": dict(self.counts),
            "carried": self.carried,
        }

    def load_pending(self, resolve: Resolver | None) -> None:
        """Take up the waiting deltas the store kept (on open), within the bounds."""
        dropped = self.waiting.load(self._store.pending(), resolve, self._now())
        if dropped:
            self._store.commit([Commit(pending_drop=dropped)])

    def _now(self) -> int:
        return self._wall()

    async def apply(
        self, received: wire.Payload, sender: Principal | None = None, *, isolate: bool = False
    ) -> ApplyResult:
        sender = sender or OPEN
        newest = check_clocks(self._clock, received.deltas)
        sorted_in = triage(received.deltas, self._store, self.waiting, self._subscribed)
        commits_seen = self._commits  # before any await: a commit meanwhile is checked for below
        duplicates, ignored = sorted_in.duplicates, sorted_in.ignored
        # what is not stored here yet must come from a sender entitled to its origin
        keyring, own = self._keyring(), self._replica_id()
        incoming, relogged, erased = sorted_in.fresh, sorted_in.relog, None
        if self.erasure is not None:  # erase markers, and deltas of memories forgotten here
            erased = await self.erasure.take(incoming, relogged, sender, keyring, received.keys)
            incoming, relogged = erased.fresh, erased.relog
        fresh_in = await authenticate_in_slices(incoming, sender, own, keyring, received.keys)
        relog_in = Authenticated()  # most payloads carry no stored delta with new entries
        if relogged:
            relog_in = await authenticate_in_slices(relogged, sender, own, keyring, received.keys)
        unauthenticated = len(fresh_in.refused) + len(relog_in.refused)
        if erased is not None:
            unauthenticated += erased.unauthenticated
        if unauthenticated:
            self.counts["unauthenticated"] += unauthenticated
        erasing = erased.taken if erased is not None else 0
        refused_erasing = len(erased.refused) - erased.unauthenticated if erased is not None else 0
        now = self._now()
        fresh = [Delivered(d, sender, now) for d in fresh_in.accepted]
        relog = [Delivered(d, sender, now) for d in relog_in.accepted]
        if not fresh and not relog:
            await self._bound_waiting([], set())
            return ApplyResult(
                erasing,
                duplicates,
                len(self.waiting),
                ignored,
                rejected=unauthenticated + refused_erasing,
                unauthenticated=unauthenticated,
            )
        doc_ids = {item.delta.doc_id for item in fresh}
        async with self._locks.hold(doc_ids):
            if self.erasure is not None:  # a marker may have landed while this apply waited
                fresh, relog, late = self.erasure.split_late(fresh, relog)
                if late:
                    await self.erasure.take_late(late)
                    erasing += len(late)
            # an apply that held these locks before us may have parked or stored some of them
            taken = {item.delta.uid for item in fresh if item.delta.uid in self.waiting}
            if self._commits != commits_seen:
                taken |= self._store.logged_deltas([item.delta.uid for item in fresh])
            if taken:
                duplicates += len(taken)
                fresh = [item for item in fresh if item.delta.uid not in taken]
            waiting_before = self.waiting.of_memories(doc_ids)
            if newest is not None:  # its drift was checked; observing it early is harmless
                self._clock.observe(newest)
            try:
                outcome = await self._apply_once(fresh, relog, waiting_before)
            except FOUND_ONCE_APPLIED as failure:
                if not (isolate or waiting_before):
                    raise
                # a lone delta that failed alone needs no second try (applying is what costs)
                alone = failure if len(fresh) == 1 and not (relog or waiting_before) else None
                outcome = await self._apply_in_parts(fresh, relog, doc_ids, isolate, failed=alone)
        evicted = await self._bound_waiting([sender.name], {item.delta.origin for item in fresh})
        mine = {item.delta.uid for item in fresh} | {item.delta.uid for item in relog}
        refused = sum(1 for d in outcome.refused if d.uid in mine)
        return ApplyResult(
            applied=erasing + sum(1 for d in outcome.applied if d.uid in mine),
            duplicates=duplicates,
            pending=len(self.waiting),
            ignored=ignored,
            events=tuple(outcome.events),
            rejected=unauthenticated + refused + refused_erasing,
            unauthenticated=unauthenticated,
            denied=outcome.denied,
            parked=sum(1 for uid in outcome.parked if uid in mine and uid not in evicted),
        )

    async def retry(self, doc_ids: set[str]) -> int:
        """Apply what waits for these memories, if it can apply now (their documents gained
        content without deltas: states from a peer); returns how many applied."""
        doc_ids = {d for d in doc_ids if self.waiting.of_memories({d})}
        if not doc_ids:
            return 0
        async with self._locks.hold(doc_ids):
            outcome = await self._apply_in_parts([], [], doc_ids, isolate=True)
        return len(outcome.applied)

    async def drop_covered(self) -> int:
        """Drop what waits whose every entry the version vectors hold now (a states page's covers
        moved them past it): a duplicate, as it would be on arrival (:func:`.inbound.triage`). Its
        change is in the states that covered it, or, for a change of an earlier epoch than theirs,
        its origin carries it over (``docs/protocol.md`` §7.11); nothing would ever apply it.
        Returns how many were dropped."""
        store = self._store
        covered = [
            item.delta.uid
            for item in self.waiting
            if item.delta.seqs
            and all(
                store.is_logged(c, item.delta.origin, s)
                for c in item.delta.seqs
                for s in item.delta.all_seqs(c)
            )
        ]
        if covered:
            work = Commit(pending_drop=covered)
            await self._commit(work, {}, {}, {}, after=lambda: self._settle(covered, []))
        return len(covered)

    async def reexamine(self, resolve: Resolver) -> int:
        """Apply again the deltas denied under rights their senders no longer have (the tokens
        changed); returns how many applied. The rest are decided again under the new rights."""
        groups: dict[str, list[DeltaRecord]] = {}
        rights: dict[str, Principal] = {}
        for decision in self._store.decisions("denied"):
            current = resolve(decision.sender)
            if current is not None and current.fingerprint != decision.rights:
                groups.setdefault(decision.sender, []).append(decision.delta)
                rights[decision.sender] = current
        applied = 0
        for name, deltas in groups.items():
            now = self._now()
            items = [Delivered(d, rights[name], now) for d in deltas]
            doc_ids = {d.doc_id for d in deltas}
            async with self._locks.hold(doc_ids):
                outcome = await self._apply_in_parts(items, [], doc_ids, isolate=True)
            applied += len(outcome.applied)
            log.info(
                "re-examined %d delta(s) denied to %s: %d applied", len(deltas), name, len(outcome.applied)
            )
        return applied

    async def retake_epochs(self, resolve: Resolver | None) -> int:
        """Apply again the rebase entries refused (EpochMismatch) by builds that did not carry
        changes over a rebase, so the memory moves to the new epoch with them carried over; returns
        how many applied. Each is applied under its sender's current rights (``resolve``; without
        it, only entries the local principal delivered)."""
        groups: dict[str, list[DeltaRecord]] = {}
        rights: dict[str, Principal] = {}
        for decision in self._store.decisions("rejected"):
            delta = decision.delta
            if not decision.reason.startswith("EpochMismatch") or not is_rebase(delta.deps, delta.update):
                continue
            current = resolve(decision.sender) if resolve is not None else None
            if current is None and decision.sender == OPEN.name:
                current = OPEN
            if current is not None:
                groups.setdefault(decision.sender, []).append(delta)
                rights[decision.sender] = current
        applied = 0
        for name, deltas in groups.items():
            items = [Delivered(d, rights[name], self._now()) for d in deltas]
            doc_ids = {d.doc_id for d in deltas}
            async with self._locks.hold(doc_ids):
                outcome = await self._apply_in_parts(items, [], doc_ids, isolate=True)
            applied += len(outcome.applied)
        if applied:
            log.info("took %d rebase entries refused before, carrying changes over them", applied)
        return applied

    async def _apply_once(
        self, fresh: list[Delivered], relog: list[Delivered], waiting_before: list[Delivered]
    ) -> _Outcome:
        """Apply, check and commit these deltas as one unit; raises (having changed nothing) if any
        check fails. A memory found damaged on the way is quarantined; the unit is then applied
        again without it (its deltas wait)."""
        found: set[str] = set()
        while True:
            try:
                return await self._apply_unit(fresh, relog, waiting_before)
            except MemoryQuarantined as exc:
                if exc.memory_id in found:
                    raise
                found.add(exc.memory_id)

    async def _apply_unit(
        self, fresh: list[Delivered], relog: list[Delivered], waiting_before: list[Delivered]
    ) -> _Outcome:
        docs: dict[str, MemoryDoc] = {}
        before: dict[str, Memory | None] = {}
        sizes: dict[str, tuple[int, int, int]] = {}
        materializer = self.materializer
        exact_over = self.limits.remote_metadata_exact_over()

        def load(doc_id: str) -> MemoryDoc:
            if doc_id not in docs:
                before[doc_id] = materializer.before(doc_id, record) if materializer else record(doc_id)
                docs[doc_id] = self._work.doc_to_merge(doc_id)
                sizes[doc_id] = docs[doc_id].sizes(exact_over=exact_over)
            return docs[doc_id]

        # a quarantined memory (its stored data does not read back) cannot take deltas: they wait,
        # like those for a memory not seen yet, and the rest of the payload applies
        involved = {item.delta.doc_id for item in fresh + relog + waiting_before}
        aside = {doc_id for doc_id in involved if doc_id in self._work.quarantine}
        held = [item for item in fresh if item.delta.doc_id in aside]
        relog = [item for item in relog if item.delta.doc_id not in aside]  # unlogged: sent again
        stored: dict[str, Memory | None] = {}  # each memory's record read once, not once per delta

        def record(doc_id: str) -> Memory | None:
            if doc_id not in stored:
                stored[doc_id] = self._work.record(doc_id)
            return stored[doc_id]

        def stored_channels(doc_id: str) -> tuple[str, ...] | None:
            return memory.channels if (memory := record(doc_id)) is not None else None

        hidden = [item for item in fresh if item.delta.doc_id not in aside and unseen(item, stored_channels)]
        hidden_uids = {item.delta.uid for item in hidden}
        candidates = [
            item for item in fresh if item.delta.doc_id not in aside and item.delta.uid not in hidden_uids
        ] + [item for item in waiting_before if item.delta.doc_id not in aside]
        by_uid = {item.delta.uid: item for item in candidates}
        try:
            waited = {item.delta.uid for item in waiting_before}
            own = self._replica_id()
            ready, not_ready, superseded = apply_causally(
                [item.delta for item in candidates],
                load,
                waited,
                carry_as=own,
                known=self._known,
                logged=self._logged,
            )
            still = {d.uid for d in not_ready}  # what is read of a delta is kept while it waits
            self._known = {key: value for key, value in self._known.items() if key[0] in still}
            applied = [by_uid[d.uid] for d in ready]
            touched = sorted({item.delta.doc_id for item in applied})
            for doc_id in touched:  # before anything reads them: reading costs per entry
                most = self.limits.remote_metadata_most(sizes[doc_id])
                after = docs[doc_id].sizes(most, exact_over)
                self.limits.check_remote(after, sizes[doc_id], f"memory {doc_id!r}")
            later = materializer is not None and len(touched) > self.read_back_at_most
            written: dict[str, tuple[DocWrite, Memory]] = {}
            if later:  # a batch: stored now, read back later (materialize.py); headers checked here
                channels = {doc_id: header_channels(docs[doc_id], doc_id) for doc_id in touched}
            else:
                written = {
                    doc_id: doc_write(docs[doc_id], expected_id=doc_id, before=before[doc_id])
                    for doc_id in touched
                }
                for write, _ in written.values():  # stamps inside the updates, not only the deltas' own
                    self._clock.check(Hlc.decode(write.updated_hlc))
                channels = {doc_id: memory.channels for doc_id, (_, memory) in written.items()}
            parking = [by_uid[d.uid] for d in not_ready if d.uid not in self.waiting]
            check_units(applied + relog, parking, channels, before, stored_channels)
        except BaseException:
            self._work.forget(docs)
            raise
        parked = parking + hidden + held
        # superseded: of an earlier epoch, whose change the rebased document holds already. Logged
        # without the delta, as decided (it must never be applied to the new epoch, nor relayed)
        gone = {d.uid for d in superseded}
        settled = [
            Decision(item.delta, "rejected", item.sender.name, item.sender.fingerprint, SUPERSEDED)
            for item in applied
            if item.delta.uid in gone
        ]
        carried = self._carried(docs, channels, own)
        work = Commit(
            deltas=[item.delta for item in applied + relog if item.delta.uid not in gone] + carried,
            decided=settled,
            docs=[write for write, _ in written.values()],
            pending_add=to_store(parked),
            pending_drop=[item.delta.uid for item in applied if item.delta.uid in self.waiting],
            stale=touched if later else [],
            fresh=[d for d in written if materializer is not None and d in materializer],
        )
        if not (work.deltas or work.pending_add or work.decided):
            return _Outcome()
        origins = {item.delta.doc_id: item.delta.origin for item in applied}  # the last applied to each
        origins.update((d.doc_id, own) for d in carried)
        changed = {k: (docs[k], memory) for k, (_, memory) in written.items()}
        stale = {doc_id: docs[doc_id] for doc_id in work.stale}

        def landed() -> None:
            self._settle(work.pending_drop, parked)
            if materializer is not None:
                for doc_id in work.fresh:
                    materializer.taken(doc_id)
                if stale:
                    materializer.mark({d: origins[d] for d in stale}, before)

        events = await self._commit(work, changed, before, origins, after=landed, stale=stale)
        if events:  # on the feed: its subscribers take them before the rest of the apply returns
            await asyncio.sleep(0)
        return _Outcome([item.delta for item in applied], events, [item.delta.uid for item in parked])

    def _carried(
        self, docs: dict[str, MemoryDoc], channels: dict[str, tuple[str, ...]], own: str
    ) -> list[DeltaRecord]:
        """The changes that carried this replica's own over a rebase just taken (causal.py), as
        local deltas: logged after the rebase entry, numbered, signed and published like a write."""
        out = []
        for doc_id, doc in docs.items():
            change, doc.carried = doc.carried, None
            if change is not None and doc_id in channels:
                hlc = self._clock.now().encode()
                out.append(
                    DeltaRecord(
                        f"{own}:{hlc}", own, doc_id, hlc, change.deps, change.update, channels[doc_id]
                    )
                )
                self.carried += 1
                log.info("carried this replica's changes to memory %s over its rebase", doc_id)
        return out

    async def _apply_in_parts(
        self,
        fresh: list[Delivered],
        relog: list[Delivered],
        doc_ids: set[str],
        isolate: bool,
        failed: Exception | None = None,
    ) -> _Outcome:
        """After a unit failed its checks: the same deltas in smaller units, each committed alone.

        The payload's own deltas first: one unit (it must pass as a whole, or the payload is refused
        as before), or with ``isolate`` one unit per memory, and a memory's unit that fails delta by
        delta, deciding against those that fail (``failed``: how the payload's one delta failed when
        it was applied alone, so it is decided against without a second try). Then every delta still
        waiting for these memories, one at a time, until none applies any more: one that fails its
        checks now that it can be applied is decided against and leaves the waiting set, so it can
        never hold back the memory again (it was parked before its memory could be checked).
        """
        total = _Outcome()
        by_memory = [[item for item in fresh if item.delta.doc_id == doc_id] for doc_id in sorted(doc_ids)]
        units = [unit for unit in (by_memory if isolate else [fresh]) if unit]
        for unit in units:
            if failed is not None and isolate:  # the payload's one delta, which failed just so
                await self._decide(unit[0], failed, total, waited=False)
                continue
            try:
                total.add(await self._apply_once(unit, [], []))
            except FOUND_ONCE_APPLIED:
                if not isolate:
                    raise
                for item in unit:
                    try:
                        total.add(await self._apply_once([item], [], []))
                    except FOUND_ONCE_APPLIED as failure:
                        await self._decide(item, failure, total, waited=False)
        for item in relog:  # a stored delta with new entries: refused, not decided (it is stored)
            try:
                total.add(await self._apply_once([], [item], []))
            except FOUND_ONCE_APPLIED as failure:
                if not isolate:
                    raise
                self._refused(item, failure, total)
        progress = True
        while progress:
            progress = False
            for waiting in self.waiting.of_memories(doc_ids):
                try:
                    outcome = await self._apply_once([], [], [waiting])
                except FOUND_ONCE_APPLIED as failure:
                    await self._decide(waiting, failure, total, waited=True)
                    progress = True
                    continue
                progress = progress or bool(outcome.applied)
                total.add(outcome)
        return total

    async def _decide(self, item: Delivered, failure: Exception, total: _Outcome, *, waited: bool) -> None:
        """Decide against ``item`` (module docstring): durably, unless only its stamp is too far ahead."""
        self._refused(item, failure, total)
        if isinstance(failure, ClockSkewError):
            decided = []
        else:
            kind = "denied" if isinstance(failure, AccessDenied) else "rejected"
            reason = f"{type(failure).__name__}: {failure}"
            decided = [Decision(item.delta, kind, item.sender.name, item.sender.fingerprint, reason)]
            total.denied += kind == "denied"
        work = Commit(decided=decided, pending_drop=[item.delta.uid] if waited else [])
        if work:
            await self._commit(work, {}, {}, {}, after=lambda: self._settle(work.pending_drop, []))

    def _refused(self, item: Delivered, failure: Exception, total: _Outcome) -> None:
        kind = (
            "denied"
            if isinstance(failure, AccessDenied)
            else "clock"
            if isinstance(failure, ClockSkewError)
            else "rejected"
        )
        self.counts[kind] += 1
        total.refused.append(item.delta)
        log.warning(
            "%s delta %s of memory %s delivered by %s: %s: %s",
            kind,
            item.delta.uid,
            item.delta.doc_id,
            item.sender.name,
            type(failure).__name__,
            failure,
        )

    async def _bound_waiting(self, senders: list[str], origins: set[str]) -> set[str]:
        """Evict what waits past its sender's or origin's bound, or for too long (one commit)."""
        if not self.waiting:
            return set()
        victims = self.waiting.over_bounds(senders, origins) if senders else []
        victims += [uid for uid in self.waiting.expired(self._now()) if uid not in victims]
        if not victims:
            return set()
        work = Commit(pending_drop=victims)
        await self._commit(work, {}, {}, {}, after=lambda: self._settle(victims, [], evicted=len(victims)))
        log.warning("evicted %d waiting delta(s) (over a bound or too old)", len(victims))
        return set(victims)

    def _settle(self, dropped: list[str], added: list[Delivered], *, evicted: int = 0) -> None:
        """The waiting set after a commit (the store's pending table changed with it)."""
        self._commits += 1
        self.waiting.settle(added, dropped, evicted=evicted)

    def _logged(self, doc_id: str) -> list[DeltaRecord]:
        """The deltas of ``doc_id`` logged or decided against here."""
        decided = [d.delta for d in self._store.decisions() if d.delta.doc_id == doc_id]
        return self._store.history(doc_id) + decided
