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

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from ..document.query import Where
from ..document.records import Conflict
from ..errors import DamagedMemory
from .paging import DELTA_OVERHEAD, merge_streams, split_covered, within_bytes
from .values import (
    Commit,
    CommitResult,
    Decision,
    DeltaRecord,
    DocWrite,
    Erased,
    LocalSigner,
    PendingDelta,
    Quarantined,
    Signature,
    Snapshot,
    StoredDoc,
    VersionVector,
    fold,
    stub_proof,
)
from .vectors import StagedVectors, behind, contiguous_advance

__all__ = [  # the port, and (re-exported) the values and helpers its users and adapters import from here
    "DELTA_OVERHEAD",
    "Commit",
    "CommitResult",
    "Decision",
    "DeltaRecord",
    "DocWrite",
    "Erased",
    "LocalSigner",
    "PendingDelta",
    "Quarantined",
    "Signature",
    "Snapshot",
    "StagedVectors",
    "Store",
    "StoredDoc",
    "VersionVector",
    "behind",
    "contiguous_advance",
    "fold",
    "merge_streams",
    "split_covered",
    "stub_proof",
    "within_bytes",
]


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
