"""The storage port: what a replica needs from durable storage, at the level of bytes and keys.

A store holds four things, and :meth:`Store.commit` changes them in one atomic transaction:

- documents: a memory's materialized record, its conflicts and a local version, and its Yrs state
  as a **snapshot plus a tail**: the snapshot folds the document's deltas up to some delta row, the
  tail is the document's deltas stored after it (the log holds them anyway). A commit never
  rewrites a document's state; a snapshot is written now and then, off the acknowledgement path
  (:class:`Snapshot`);
- the delta log: every delta (origin replica, hlc, deps, Yrs update) with its sequence number in each
  channel it belongs to, ``(channel, origin, seq)``;
- version vectors: per channel, ``{origin: highest contiguous seq stored}``. They never claim a delta
  that was not stored and applied;
- pending deltas: received but not yet applicable (their causal dependencies have not arrived);
- decisions: deltas received and refused for good (see :class:`Decision`), logged without a delta;
- quarantined memories: those whose stored data did not read back (:class:`Quarantined`), kept
  across restarts until an operator releases them;
- erasures: the memories forgotten here (:attr:`Commit.erase`), each with the local version its
  erasure took. Forgetting removes the memory's record, state, conflicts, pending and decided
  deltas, and turns each of its logged deltas into a *stub* (``crdtmem.document.erasure``): same
  uid, origin, stamp and log entries, no content. :meth:`Store.scrub` then makes the file keep no
  copy of the removed bytes;
- the horizon: per channel, ``{origin: seq}`` up to which the log was folded (compaction: the
  entries are gone, their changes live on in the documents' snapshots; ``Commit.fold``), or was
  never held here because it arrived folded into document states (``Commit.covers``). A peer whose
  vector is below it catches up from document states, never from the log;
- outbox marks: per reader of the log (a *sink*, e.g. the NATS bus publisher) and channel,
  ``{origin: seq}`` up to which that sink has durably handed the log on. The log is the outbox; a
  mark only follows it, in its own small transaction, so a crash between a commit and its hand-off
  leaves the mark behind and the sink hands those entries on again (never skips them).

Records are derived from the state: a conversation's stored record does not hold its messages (a
record rewritten whole at every append would cost the length of the conversation); the store reads
them from the document's state when it hands the record out, so readers always get whole records.
Stores are used from two threads: :meth:`commit` from the replica's commit thread, everything else from
the event loop. Implementations make that safe.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..document.epoch import rebase_client
from ..document.query import Where
from ..document.records import Conflict
from ..document.yroots import YDoc
from ..errors import DamagedMemory

VersionVector = dict[str, int]
"""``{origin replica: highest contiguous seq}`` for one channel."""


@dataclass(frozen=True, slots=True)
class Signature:
    """An origin's Ed25519 signature of a delta and of its *claim*: its sequence numbers in every
    channel of the memory (``seqs``, and ``also`` for a coalesced delta), which relays forward
    verbatim (``crdtmem.engine.signing``)."""

    sig: bytes
    seqs: dict[str, int]
    also: dict[str, tuple[int, ...]] = field(default_factory=dict)
    header: bytes | None = None
    """The origin's *header signature*: of the same delta and claim without its ``deps`` and
    ``update``, which stays verifiable once the delta is a content-free stub (None: signed before
    header signatures existed)."""

    def covers(self, channel: str, seqs: tuple[int, ...]) -> bool:
        """Whether the claim holds every one of ``seqs`` in ``channel``."""
        if channel not in self.seqs:
            return False
        claimed = {self.seqs[channel], *self.also.get(channel, ())}
        return all(seq in claimed for seq in seqs)


@dataclass(frozen=True, slots=True)
class DeltaRecord:
    """One delta: a Yrs update of one memory document, from one origin replica.

    ``seqs`` maps each channel the delta is logged in to its sequence number there. A local delta is
    committed with empty ``seqs``; the store allocates the next sequence numbers for ``channels``.

    A *coalesced* delta (lazy sync merges several deltas of one document from one origin) covers more
    than one sequence number per channel: ``also`` lists the others. Its update is the Yrs merge of
    the members' updates, its ``deps`` those of the first member, its uid ``{origin}:{hlc}/{first}``.
    """

    uid: str
    origin: str
    doc_id: str
    hlc: str
    deps: bytes
    update: bytes
    channels: tuple[str, ...]
    seqs: dict[str, int] = field(default_factory=dict)
    also: dict[str, tuple[int, ...]] = field(default_factory=dict)
    signature: Signature | None = None
    """Its origin's signature (None: unsigned, e.g. a foreign client's, or stored before signing)."""
    header: Signature | None = None
    """A stub's proof (its content is gone, and with it ``signature``): the origin's header
    signature (``sig``) and the claim it covers, kept from the delta it was."""

    def all_seqs(self, channel: str) -> tuple[int, ...]:
        """Every sequence number this delta covers in ``channel``, ascending."""
        return (*self.also.get(channel, ()), self.seqs[channel])


@dataclass(frozen=True, slots=True)
class DocWrite:
    """The new record of one document after a change, with what queries filter on. (Its state is
    the deltas committed with it: see :class:`Snapshot`.)"""

    doc_id: str
    kind: str
    record: dict[str, Any]
    channels: tuple[str, ...]
    user_id: str | None
    tenant_id: str | None
    deleted: bool
    conflicted: bool
    updated_hlc: str
    conflicts: tuple[Conflict, ...]
    new: bool = True
    """The document was not stored before (its channel rows must be written)."""
    had_conflicts: bool = True
    """The stored version may have conflict rows to clear."""


@dataclass(frozen=True, slots=True)
class Erased:
    """A document forgotten here (:attr:`Commit.erase`): the local version of its erasure, the
    channels it was stored on here when it was forgotten (none if it was not stored here, or was
    forgotten before the store kept them) and the stamp of its erase marker ('' if unknown)."""

    doc_id: str
    version: int
    channels: tuple[str, ...]
    hlc: str


@dataclass(frozen=True, slots=True)
class PendingDelta:
    """A delta waiting for its causal dependencies, with who delivered it and when.

    ``sender`` is opaque to stores (the engine keeps the deliverer's rights in it, so the delta is
    authorized against them, not against whoever completes it)."""

    delta: DeltaRecord
    sender: str
    received_ms: int

    @property
    def uid(self) -> str:
        return self.delta.uid

    @property
    def doc_id(self) -> str:
        return self.delta.doc_id

    @property
    def origin(self) -> str:
        return self.delta.origin


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A memory set aside because its stored data did not read back: why, and since when (ms)."""

    memory_id: str
    reason: str
    since_ms: int


@dataclass(frozen=True, slots=True)
class Decision:
    """A delta received and decided against: denied (its sender may not write its memory) or
    rejected (it is wrong in itself). Its entries are logged *without* a delta: the version vectors
    move past them, so the stream behind keeps flowing, but nothing exports them (a relay never
    passes on what it refused). ``sender`` and ``rights`` name whose rights decided it, so it can be
    examined again when they change."""

    delta: DeltaRecord
    kind: str
    """``denied`` or ``rejected``."""
    sender: str
    rights: str
    reason: str

    @property
    def uid(self) -> str:
        return self.delta.uid


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A document's whole Yrs state, folding every delta of it whose row id is ``upto`` or less.

    Written for a document the store already has a record of; one older than the stored snapshot
    is ignored. Loading the document is then this state plus the deltas stored after ``upto``.
    """

    doc_id: str
    state: bytes
    upto: int
    packed: bytes | None = None
    """``state`` as the SQLite store keeps it (``sqlite_states.pack``), when the writer made it off
    the event loop; None: the store packs it itself if it packs it. Other stores ignore it."""


@dataclass(frozen=True, slots=True)
class StoredDoc:
    """A document as the store holds it: the snapshot (None: none yet) and the tail after it, as
    ``(delta row id, update)`` in row order, which is a causal order."""

    snapshot: bytes | None
    upto: int
    tail: list[tuple[int, bytes]]


@dataclass(slots=True)
class Commit:
    """One atomic unit of work: deltas to log, documents to write, pending deltas to add/drop,
    decisions to record, snapshots to keep."""

    deltas: list[DeltaRecord] = field(default_factory=list)
    docs: list[DocWrite] = field(default_factory=list)
    pending_add: list[PendingDelta] = field(default_factory=list)
    pending_drop: list[str] = field(default_factory=list)
    decided: list[Decision] = field(default_factory=list)
    """A delta decided against before and stored now (its sender's rights changed) takes its
    logged entries back, and its decision goes."""
    snapshots: list[Snapshot] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    """Documents whose record this commit leaves behind their deltas (materialized later)."""
    fresh: list[str] = field(default_factory=list)
    """Documents whose record this commit brings up to date (no longer stale)."""
    states: list[Snapshot] = field(default_factory=list)
    """Documents' whole states, written whatever snapshot is stored (each holds everything stored
    of its document: a state received from a peer, merged into the document under its lock)."""
    covers: dict[str, VersionVector] = field(default_factory=dict)
    """Entries this replica now holds folded into document states it received (``states``): the
    vectors and the horizon rise to them."""
    fold: dict[str, VersionVector] = field(default_factory=dict)
    """Compaction: the entries up to these seqs leave the log (as far as contiguous entries are in
    their documents' snapshots; erase markers stay), and the horizon rises to where it stopped."""
    erase: list[str] = field(default_factory=list)
    """Documents to forget (module docstring), before this commit's deltas are logged: a unit that
    forgets a memory logs its erase marker in ``deltas``, which stays whole."""

    def __bool__(self) -> bool:
        return bool(
            self.erase
            or self.states
            or self.covers
            or self.fold
            or self.deltas
            or self.docs
            or self.pending_add
            or self.pending_drop
            or self.decided
            or self.snapshots
            or self.stale
            or self.fresh
        )


@dataclass(slots=True)
class CommitResult:
    """What a commit assigned: doc versions, the delta row ids, and for local deltas their sequence
    numbers."""

    versions: dict[str, int] = field(default_factory=dict)
    seqs: dict[str, dict[str, int]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    """Each delta's row id (by uid): the order of the log here, and what snapshots count by."""
    signatures: dict[str, Signature] = field(default_factory=dict)
    """For local deltas, when the store has a signer: their signatures (made once seqs are known)."""


LocalSigner = Callable[["DeltaRecord", dict[str, int]], Signature]
"""Signs a local delta with the sequence numbers the store gives it, inside the commit."""


class Store(Protocol):
    """The storage port. See the module docstring for the data model."""

    signer: LocalSigner | None
    """Set by the replica: local deltas are signed with it, in the commit that numbers them."""
    on_damaged: Callable[[DamagedMemory], object] | None
    """Set by the replica: told of each memory a query left out because its rows do not read back.
    Reads of one memory (``load_doc``, ``load_record``) raise :class:`~crdtmem.errors.DamagedMemory`
    instead."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def commit(self, work: Sequence[Commit]) -> list[CommitResult]:
        """Apply every unit atomically in one transaction; raise StorageError and change nothing
        on failure. Returns one result per unit."""
        ...

    def load_doc(self, doc_id: str) -> StoredDoc | None:
        """The document's snapshot and tail, None if nothing of it is stored."""
        ...

    def load_state(self, doc_id: str) -> bytes | None:
        """The document's whole state (its snapshot and tail folded into one update), or None."""
        ...

    def load_record(self, doc_id: str) -> dict[str, Any] | None:
        """The materialized record with its ``version``, or None."""
        ...

    def query_records(
        self,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        channel: str | None = None,
        kind: str | None = None,
        include_deleted: bool = False,
        limit: int | None = None,
        since_version: int | None = None,
        ascending: bool = False,
        where: Where | None = None,
        before_version: int | None = None,
        max_chars: int | None = None,
    ) -> list[dict[str, Any]]:
        """Records matching every given filter, most recently changed first (``ascending``: oldest
        first); ``since_version`` keeps only records changed after that local version,
        ``before_version`` only those changed before it (a page's cursor); ``where`` is a record
        filter (:mod:`crdtmem.document.query`), with the meaning of its ``matches``.
        ``max_chars`` ends the page early once its records' JSON adds up to more than that many
        characters (it holds at least one record): a page of a few large memories."""
        ...

    def count_records(
        self,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        channel: str | None = None,
        kind: str | None = None,
        include_deleted: bool = False,
        where: Where | None = None,
    ) -> int:
        """How many records :meth:`query_records` would return with these filters and no limit."""
        ...

    def query_ids(
        self,
        *,
        user_id: str | None = None,
        tenant_id: str | None = None,
        channel: str | None = None,
        kind: str | None = None,
        include_deleted: bool = False,
        where: Where | None = None,
        limit: int | None = None,
    ) -> list[str]:
        """The ids of the records :meth:`query_records` would return (without reading them)."""
        ...

    def conflicts(
        self, *, user_id: str | None = None, tenant_id: str | None = None, doc_id: str | None = None
    ) -> list[Conflict]: ...

    def version_vector(self, channel: str) -> VersionVector: ...

    def is_logged(self, channel: str, origin: str, seq: int) -> bool:
        """Whether ``(channel, origin, seq)`` is in the log (covered by the vector or past a gap)."""
        ...

    def channels(self) -> list[str]:
        """Every channel that has at least one logged delta."""
        ...

    def deltas_since(
        self, channels: Iterable[str], vectors: dict[str, VersionVector], limit: int | None = None
    ) -> list[DeltaRecord]:
        """Logged deltas of ``channels`` not covered by ``vectors``, in local log order, each once,
        with ``seqs`` restricted to ``channels``. At most ``limit`` deltas."""
        ...

    def decided_seqs(self, channel: str, origin: str, after: int, upto: int) -> set[int]:
        """The entries of ``(channel, origin)`` in ``(after, upto]`` logged as decided against
        (received, not applied: there is no delta to export)."""
        ...

    def has_delta(self, uid: str) -> bool: ...

    def logged_deltas(self, uids: Sequence[str]) -> set[str]:
        """Which of ``uids`` are in the delta log: one lookup for a whole payload. (Pending deltas
        are not: the replica keeps those in memory too.)"""
        ...

    def pending(self) -> list[PendingDelta]: ...

    def decisions(self, kind: str | None = None) -> list[Decision]:
        """The recorded decisions (of one ``kind``), in the order they were taken."""
        ...

    def entries_without_delta(self, channel: str) -> dict[str, set[int]]:
        """The entries of ``channel`` logged without a delta (decided against), by origin. They
        outlive their decisions when their memory is forgotten (the decision holds its content)."""
        ...

    def stale(self) -> list[str]:
        """Documents whose stored record is behind their deltas (``Commit.stale``, not yet
        ``Commit.fresh``): the engine materializes them again after a crash."""
        ...

    def history(self, doc_id: str) -> list[DeltaRecord]:
        """Every delta of one document in the order this replica applied them."""
        ...

    def quarantined(self) -> list[Quarantined]:
        """The memories set aside as damaged (:meth:`quarantine`), by id."""
        ...

    def quarantine(self, entry: Quarantined) -> None:
        """Record a damaged memory durably, in a transaction of its own (a memory recorded already
        keeps its first reason and time). Raises StorageError if it cannot be written."""
        ...

    def release(self, memory_id: str) -> bool:
        """Forget that the memory was set aside (after a repair); whether it was."""
        ...

    def last_hlc(self) -> str:
        """The highest hlc of any stored delta, '' if none (to restore the clock)."""
        ...

    def doc_count(self) -> int: ...

    def is_erased(self, doc_id: str) -> bool:
        """Whether the document was forgotten here (``Commit.erase``)."""
        ...

    def markers_of(self, doc_ids: Iterable[str], channels: Iterable[str]) -> list[DeltaRecord]:
        """The logged erase markers of these forgotten documents (their deltas that are not stubs),
        with their signatures and ``seqs`` restricted to ``channels``, as ``deltas_since`` gives
        them. A receiver takes a stub only with its memory's marker (``docs/protocol.md`` §7.9)."""
        ...

    def erased_since(self, version: int, limit: int | None = None) -> list[tuple[str, int]]:
        """``(doc_id, version)`` of the documents forgotten after local ``version``, oldest first."""
        ...

    def erasures_since(self, version: int, limit: int | None = None) -> list[Erased]:
        """:meth:`erased_since` with the channels and marker stamp of each erasure (the feed
        announces them to a client that resumes after they happened)."""
        ...

    def horizon(self, channel: str) -> VersionVector:
        """``{origin: seq}`` up to which ``channel``'s log is folded (module docstring)."""
        ...

    def logged_before(self, channel: str, hlc: str) -> VersionVector:
        """Per origin, the highest seq logged in ``channel`` whose delta is stamped before ``hlc``."""
        ...

    def folded_states(self, min_bytes: int) -> list[tuple[str, int]]:
        """``(doc id, snapshot bytes)`` of the documents whose snapshot holds at least ``min_bytes``
        and whose every delta was folded (none of them is left in the log): the ones a rebase may
        rebuild (``crdtmem.engine.rebase``)."""
        ...

    def fold_blockers(self, fold: dict[str, VersionVector]) -> list[str]:
        """Documents whose tail (deltas after their snapshot) holds entries of ``fold``: a snapshot
        of each must come first, or the fold stops below them."""
        ...

    def scrub(self) -> None:
        """Make the storage keep no copy of what commits removed (e.g. flush a write-ahead log and
        zero free space); called after a memory is forgotten."""
        ...

    def outbox_marks(self, sink: str) -> dict[str, VersionVector]:
        """``{channel: {origin: seq}}``: how far ``sink`` has durably handed the log on."""
        ...

    def raise_outbox_marks(self, sink: str, marks: dict[str, VersionVector]) -> None:
        """Store ``marks`` for ``sink`` durably, in one transaction; a mark never goes back (a lower
        seq than the stored one leaves it as it is)."""
        ...


def fold(stored: StoredDoc) -> bytes:
    """A stored document's snapshot and tail as one Yrs update: its whole state."""
    parts = ([stored.snapshot] if stored.snapshot else []) + [update for _, update in stored.tail]
    if len(parts) == 1:
        return parts[0]
    doc = YDoc()
    for part in parts:
        if rebase_client(part) is not None:  # a new epoch of the document replaces what came before
            doc = YDoc()
        doc.apply_update(part)
    return doc.get_update()


class StagedVectors:
    """Copy-on-write version vectors for one commit.

    Only the channels a commit touches are copied (copying every channel made each commit O(channels));
    :meth:`publish` swaps them in once the transaction has committed, so a failed commit leaves the
    store's vectors as they were.
    """

    def __init__(self, vectors: dict[str, VersionVector], beyond: dict[str, dict[str, set[int]]]):
        self._vectors = vectors
        self._beyond = beyond
        self.vectors: dict[str, VersionVector] = {}
        self.beyond: dict[str, dict[str, set[int]]] = {}

    def vector(self, channel: str) -> VersionVector:
        staged = self.vectors.get(channel)
        if staged is None:
            staged = self.vectors[channel] = dict(self._vectors.get(channel, {}))
            self.beyond[channel] = {o: set(s) for o, s in self._beyond.get(channel, {}).items()}
        return staged

    def is_logged(self, channel: str, origin: str, seq: int) -> bool:
        vector = self.vector(channel)
        return seq <= vector.get(origin, 0) or seq in self.beyond[channel].get(origin, ())

    def advance(self, channel: str, origin: str, seq: int) -> None:
        contiguous_advance(self.vector(channel), self.beyond[channel], origin, seq)

    def raise_to(self, channel: str, origin: str, seq: int) -> bool:
        """Claim every seq up to ``seq`` (held in document states), then whatever stored run follows;
        returns whether the vector moved."""
        vector, beyond = self.vector(channel), self.beyond[channel]
        if seq <= vector.get(origin, 0):
            return False
        vector[origin] = seq
        waiting = {s for s in beyond.get(origin, set()) if s > seq}
        while seq + 1 in waiting:
            seq += 1
            waiting.discard(seq)
        vector[origin] = seq
        if waiting:
            beyond[origin] = waiting
        else:
            beyond.pop(origin, None)
        return True

    def changed(self, channel: str) -> bool:
        return channel in self.vectors

    def publish(self) -> None:
        self._vectors.update(self.vectors)
        for channel, waiting in self.beyond.items():
            if waiting:
                self._beyond[channel] = waiting
            else:
                self._beyond.pop(channel, None)


def stub_proof(delta: DeltaRecord) -> Signature | None:
    """What stays verifiable of ``delta`` once it is a stub: its origin's header signature."""
    signed = delta.signature
    if signed is not None and signed.header is not None:
        return Signature(signed.header, dict(signed.seqs), dict(signed.also))
    return delta.header


def behind(horizon: VersionVector, vector: VersionVector) -> bool:
    """Whether a peer at ``vector`` misses entries the log no longer holds (folded up to ``horizon``)."""
    return any(vector.get(origin, 0) < seq for origin, seq in horizon.items())


def merge_streams(streams: Iterable[list[tuple[int, int]]], limit: int | None) -> list[int]:
    """The deltas of a ``deltas_since`` page, in the order to send them.

    Each stream is one (channel, origin) log past the peer's vector, as ``(delta_id, seq)`` in seq
    order. The merge repeatedly takes the stream head logged earliest here (smallest delta id): each
    origin's deltas go out in its own order, and the first delta of a page is always the lowest seq
    some stream misses. Log order alone is not enough: a relay that got seq 1 of an origin after seqs
    2..8 logs it last, and a page cut by log order would never reach it.
    """
    streams_list = list(streams)
    heads = [(stream[0][0], i, 0) for i, stream in enumerate(streams_list) if stream]
    heapq.heapify(heads)
    chosen: list[int] = []
    seen: set[int] = set()
    while heads and (limit is None or len(chosen) < limit):
        delta_id, i, at = heapq.heappop(heads)
        if delta_id not in seen:
            seen.add(delta_id)
            chosen.append(delta_id)
        if at + 1 < len(streams_list[i]):
            heapq.heappush(heads, (streams_list[i][at + 1][0], i, at + 1))
    return chosen


DELTA_OVERHEAD = 256
"""Bytes a delta takes in a payload besides its update and deps (ids, stamp, seqs), at most, roughly."""


def within_bytes(deltas: list[DeltaRecord], max_bytes: int) -> list[DeltaRecord]:
    """The leading ``deltas`` whose payload stays under ``max_bytes`` (always at least one), so a
    page of big memories never outgrows what a receiver accepts."""
    total = 0
    for n, delta in enumerate(deltas):
        total += len(delta.update) + len(delta.deps) + DELTA_OVERHEAD
        if total > max_bytes and n > 0:
            return deltas[:n]
    return deltas


def split_covered(covered: dict[str, list[int]]) -> tuple[dict[str, int], dict[str, tuple[int, ...]]]:
    """``{channel: [seqs]}`` -> (highest seq per channel, the others per channel), for deltas_since."""
    seqs: dict[str, int] = {}
    also: dict[str, tuple[int, ...]] = {}
    for channel, numbers in covered.items():
        ordered = sorted(numbers)
        seqs[channel] = ordered[-1]
        if len(ordered) > 1:
            also[channel] = tuple(ordered[:-1])
    return seqs, also


def contiguous_advance(vector: VersionVector, beyond: dict[str, set[int]], origin: str, seq: int) -> None:
    """Record ``seq`` from ``origin`` as stored and advance ``vector`` over any now-contiguous run.

    ``beyond`` keeps sequence numbers stored past a gap, so a later arrival that fills the gap
    advances the vector over all of them.
    """
    current = vector.get(origin, 0)
    if seq <= current:
        return
    if seq != current + 1:
        beyond.setdefault(origin, set()).add(seq)
        return
    waiting = beyond.get(origin, set())
    while current + 1 == seq or (current + 1) in waiting:
        current += 1
        waiting.discard(current)
    vector[origin] = current
    if not waiting:
        beyond.pop(origin, None)
