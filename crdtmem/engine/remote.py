"""Remote changes into a replica: a decoded payload ─▶ one commit.

::

    payload ─▶ clock check + triage (inbound.py) ─▶ lock the memories ─▶ causal apply (causal.py)
      ─▶ read each touched document back (changes.doc_write) ─▶ one commit (the replica's) ─▶ events

Deltas whose dependencies have not arrived wait in :attr:`RemoteApply.pending`, mirrored durably in
the store's pending table, and are applied by the payload that completes them.

A delta names the channels it is logged on (its ``seqs``); a sender cannot be trusted to name them
right. So before anything commits, every delta's channels must be channels its memory is on (read
from the merged document), a memory's channels must not change (its scope is fixed at creation), and,
when the caller passes ``may_write`` (a server applying what a token holder sent), the writer must
be allowed to write every channel of every memory it changes: the REST rule. Otherwise the whole
payload is refused and nothing changes.

Two cases must not hold a memory or a stream back for good, so there a failed unit is retried in
parts, each committed alone (:meth:`RemoteApply._apply_in_parts`):

- a delta that waited for its dependencies was parked unchecked; if it fails once they arrive, it is
  rejected and dropped, and the payload that completed it applies;
- a link or a pull (``isolate``) applies a payload memory by memory and rejects the deltas of a
  memory that fail (a peer would otherwise resend the refused payload forever).

Rejected deltas are logged and counted in ``ApplyResult.rejected``, never stored: the version vector
keeps a gap where they were. Those rejected for themselves are skipped when resent (see
:meth:`RemoteApply._reject`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..access import OPEN, AccessDenied, Principal, may_write_memory
from ..clock import Hlc, HybridLogicalClock
from ..document.memory import MemoryDoc
from ..document.records import Memory
from ..errors import MalformedPayload, PayloadError
from ..events import MemoryEvent
from ..store.base import Commit, DeltaRecord, DocWrite, Store
from . import payload as wire
from .causal import apply_causally
from .changes import doc_write
from .inbound import ApplyResult, check_clocks, triage
from .locks import KeyedLocks
from .publish import Publisher
from .trust import authenticate
from .workset import WorkingSet

log = logging.getLogger("crdtmem.remote")

FOUND_ONCE_APPLIED = (PayloadError, AccessDenied)
"""Checks that can only fail once a delta is applied (its stamps, its memory's id and channels, the
sender's rights to that memory), as opposed to the payload's form, which is checked on decode."""


@dataclass
class _Outcome:
    applied: list[DeltaRecord] = field(default_factory=list)
    events: list[MemoryEvent] = field(default_factory=list)
    rejected: list[DeltaRecord] = field(default_factory=list)

    def add(self, other: _Outcome) -> None:
        self.applied += other.applied
        self.events += other.events
        self.rejected += other.rejected


MayWrite = Callable[[Sequence[str]], bool]
"""Whether the sender may write a memory on these channels."""


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
    ):
        self._clock = clock
        self._store = store
        self._work = work
        self._locks = locks
        self._subscribed = subscribed
        self._commit = publisher.commit
        self._replica_id = replica_id
        self.pending: dict[str, DeltaRecord] = {}
        """Deltas stored but waiting for their causal dependencies, by uid."""
        self._commits = 0  # applies committed: an apply that waited for its locks re-checks if it moved
        self.rejected: dict[str, str] = {}
        """Deltas refused on their own after the payload that brought them was accepted (parked, or a
        link's), by uid, with the reason. Kept in memory: after a restart a resent one is refused again
        the same way."""

    def load_pending(self) -> None:
        """Take up the waiting deltas the store kept (on open)."""
        self.pending = {d.uid: d for d in self._store.pending()}

    async def apply(
        self, received: wire.Payload, sender: Principal | None = None, *, isolate: bool = False
    ) -> ApplyResult:
        newest = check_clocks(self._clock, received.deltas)
        sorted_in = triage(received.deltas, self._store, self.pending, self._subscribed, self.rejected)
        duplicates, ignored = sorted_in.duplicates, sorted_in.ignored
        # what is not stored here yet must come from a sender entitled to its origin
        fresh_in = authenticate(sorted_in.fresh, sender or OPEN, self._replica_id())
        relog_in = authenticate(sorted_in.relog, sender or OPEN, self._replica_id())
        fresh, relog = fresh_in.accepted, relog_in.accepted
        unauthenticated = len(fresh_in.refused) + len(relog_in.refused)
        if not fresh and not relog:
            return ApplyResult(
                0,
                duplicates,
                0,
                ignored,
                rejected=sorted_in.rejected + unauthenticated,
                unauthenticated=unauthenticated,
            )
        may_write = None if sender is None else functools.partial(may_write_memory, sender)
        doc_ids = {d.doc_id for d in fresh}
        commits_seen = self._commits
        async with self._locks.hold(doc_ids):
            # an apply that held these locks before us may have parked or stored some of them
            taken = {d.uid for d in fresh if d.uid in self.pending}
            if self._commits != commits_seen:
                taken |= self._store.logged_deltas([d.uid for d in fresh])
            if taken:
                duplicates += len(taken)
                fresh = [d for d in fresh if d.uid not in taken]
            waiting_before = [d for d in self.pending.values() if d.doc_id in doc_ids]
            if newest is not None:  # its drift was checked; observing it early is harmless
                self._clock.observe(newest)
            try:
                outcome = await self._apply_once(fresh, relog, waiting_before, may_write)
            except FOUND_ONCE_APPLIED:
                if not (isolate or waiting_before):
                    raise
                outcome = await self._apply_in_parts(fresh, relog, doc_ids, may_write, isolate)
        fresh_uids = {d.uid for d in fresh}
        return ApplyResult(
            applied=sum(1 for d in outcome.applied if d.uid in fresh_uids),
            duplicates=duplicates,
            pending=len(self.pending),
            ignored=ignored,
            events=tuple(outcome.events),
            rejected=sorted_in.rejected
            + unauthenticated
            + sum(1 for d in outcome.rejected if d.uid in fresh_uids),
            unauthenticated=unauthenticated,
        )

    async def _apply_once(
        self,
        fresh: list[DeltaRecord],
        relog: list[DeltaRecord],
        waiting_before: list[DeltaRecord],
        may_write: MayWrite | None,
    ) -> _Outcome:
        """Apply, check and commit these deltas as one unit; raises (having changed nothing) if any
        check fails."""
        docs: dict[str, MemoryDoc] = {}
        before: dict[str, Memory | None] = {}

        def load(doc_id: str) -> MemoryDoc:
            if doc_id not in docs:
                before[doc_id] = self._work.record(doc_id)
                docs[doc_id] = self._work.doc_to_merge(doc_id)
            return docs[doc_id]

        try:
            applied, waiting = apply_causally(fresh + waiting_before, load)
            touched = {d.doc_id for d in applied}
            written = {
                doc_id: doc_write(docs[doc_id], expected_id=doc_id, before=before[doc_id])
                for doc_id in sorted(touched)
            }
            writes = [write for write, _ in written.values()]
            for write in writes:  # stamps inside the updates, not only the deltas' own
                self._clock.check(Hlc.decode(write.updated_hlc))
            parked = [d for d in waiting if d.uid not in self.pending]
            self._check_channels(applied + relog, parked, written, before, may_write)
        except BaseException:
            self._work.forget(docs)
            raise
        work = Commit(
            deltas=applied + relog,
            docs=writes,
            pending_add=parked,
            pending_drop=[d.uid for d in applied if d.uid in self.pending],
        )
        if not (work.deltas or work.pending_add):
            return _Outcome()
        origins = {d.doc_id: d.origin for d in applied}  # the last delta applied to each memory
        changed = {k: (docs[k], memory) for k, (_, memory) in written.items()}
        events = await self._commit(work, changed, before, origins, after=lambda: self._settle_pending(work))
        return _Outcome(applied, events)

    async def _apply_in_parts(
        self,
        fresh: list[DeltaRecord],
        relog: list[DeltaRecord],
        doc_ids: set[str],
        may_write: MayWrite | None,
        isolate: bool,
    ) -> _Outcome:
        """After a unit failed its checks: the same deltas in smaller units, each committed alone.

        The payload's own deltas first: one unit (it must pass as a whole, or the payload is refused
        as before), or with ``isolate`` one unit per memory, a unit that fails being rejected. Then
        every delta still waiting for these memories, one at a time, until none applies any more: one
        that fails its checks now that it can be applied is rejected and dropped from the waiting
        set, so it can never hold back the memory again (it was parked unchecked, before its
        dependencies arrived).
        """
        total = _Outcome()
        by_memory = [[d for d in fresh if d.doc_id == doc_id] for doc_id in sorted(doc_ids)]
        units = by_memory if isolate else [fresh]
        parts: list[tuple[list[DeltaRecord], list[DeltaRecord]]] = [(unit, []) for unit in units if unit]
        if relog:
            parts.append(([], relog))
        for unit_fresh, unit_relog in parts:
            try:
                total.add(await self._apply_once(unit_fresh, unit_relog, [], may_write))
            except FOUND_ONCE_APPLIED as failure:
                if not isolate:
                    raise
                self._reject(unit_fresh + unit_relog, failure, total)
        progress = True
        while progress:
            progress = False
            for delta in [d for d in self.pending.values() if d.doc_id in doc_ids]:
                try:
                    outcome = await self._apply_once([], [], [delta], may_write)
                except FOUND_ONCE_APPLIED as failure:
                    self._reject([delta], failure, total)
                    drop = Commit(deltas=[], docs=[], pending_drop=[delta.uid])
                    await self._commit(drop, {}, {}, {}, after=functools.partial(self._settle_pending, drop))
                    progress = True
                    continue
                progress = progress or bool(outcome.applied)
                total.add(outcome)
        return total

    def _reject(self, deltas: list[DeltaRecord], failure: Exception, outcome: _Outcome) -> None:
        """Do not apply these now. A failure of the delta itself (*MalformedPayload*: not this memory's
        document, a scope that would move, a channel its memory is not on) is remembered and a resent
        copy skipped. One that depends on the sender's rights or on the clock is not: another sender
        may deliver the same delta, and a stamp too far ahead today may be fine tomorrow."""
        for delta in deltas:
            if isinstance(failure, MalformedPayload):
                self.rejected[delta.uid] = f"{type(failure).__name__}: {failure}"
            outcome.rejected.append(delta)
        log.warning(
            "rejected %d delta(s) of memory %s from %s: %s: %s",
            len(deltas),
            deltas[0].doc_id,
            deltas[0].origin,
            type(failure).__name__,
            failure,
        )

    def _settle_pending(self, work: Commit) -> None:
        """The waiting set after ``work`` committed (the store's pending table changed with it)."""
        self._commits += 1
        for uid in work.pending_drop:
            self.pending.pop(uid, None)
        for delta in work.pending_add:
            self.pending[delta.uid] = delta

    def _check_channels(
        self,
        logged: list[DeltaRecord],
        parked: list[DeltaRecord],
        written: dict[str, tuple[DocWrite, Memory]],
        before: dict[str, Memory | None],
        may_write: MayWrite | None,
    ) -> None:
        """The channel rules (module docstring), before anything commits. Deltas about to wait for
        their dependencies are checked too when their memory is known here (else when applied)."""
        channels: dict[str, tuple[str, ...] | None] = {d: m.channels for d, (_, m) in written.items()}
        for doc_id, memory in before.items():
            now = channels.get(doc_id)
            if memory is not None and now is not None and set(now) != set(memory.channels):
                raise MalformedPayload(
                    f"a delta moves memory {doc_id} from {list(memory.channels)} to {list(now)}; "
                    "a memory's scope is fixed when it is created"
                )

        def channels_of(doc_id: str) -> tuple[str, ...] | None:
            if doc_id not in channels:
                stored = self._work.record(doc_id)
                channels[doc_id] = stored.channels if stored is not None else None
            return channels[doc_id]

        checked: dict[str, tuple[str, ...]] = {}
        for delta in logged:
            checked[delta.doc_id] = _logged_on_its_memory(delta, channels_of(delta.doc_id) or ())
        for delta in parked:
            on = channels_of(delta.doc_id)
            if on is not None:
                checked[delta.doc_id] = _logged_on_its_memory(delta, on)
        if may_write is not None:
            for doc_id, on in sorted(checked.items()):
                if not may_write(on):
                    raise AccessDenied(
                        f"the sender may not write memory {doc_id}: it is on {', '.join(on)} "
                        "(writing needs every one)"
                    )


def _logged_on_its_memory(delta: DeltaRecord, channels: tuple[str, ...]) -> tuple[str, ...]:
    """``channels`` (the memory's), if every channel ``delta`` is logged on is one of them."""
    stray = sorted(set(delta.seqs) - set(channels))
    if stray:
        raise MalformedPayload(
            f"delta {delta.uid} is logged on {', '.join(stray)}, but memory {delta.doc_id} is on "
            f"{', '.join(channels) or 'no channel here'}"
        )
    return channels
