"""What crosses the storage port (:mod:`crdtmem.store.base`): deltas and their signatures, the
records and states of documents, pending and decided deltas, quarantined memories, erasures, and
the atomic :class:`Commit` with what it assigned (:class:`CommitResult`). Plain values; the port's
docstring describes the data model they make up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..document.epoch import epoch_of, rebase_client
from ..document.records import Conflict
from ..document.yroots import YDoc

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


def _slot_setters(cls: type, names: tuple[str, ...]) -> tuple[Callable[[Any, Any], None], ...]:
    return tuple(getattr(cls, name).__set__ for name in names)


_new = object.__new__
_SIGNATURE_FIELDS = _slot_setters(Signature, ("sig", "seqs", "also", "header"))
_DELTA_FIELDS = _slot_setters(
    DeltaRecord,
    ("uid", "origin", "doc_id", "hlc", "deps", "update", "channels", "seqs", "also", "signature", "header"),
)


def received_signature(
    sig: bytes, seqs: dict[str, int], also: dict[str, tuple[int, ...]], header: bytes | None
) -> Signature:
    """``Signature(sig, seqs, also, header)``, built without the frozen dataclass' ``__init__``
    (which sets each field through ``object.__setattr__``): every delta of an inbound payload is
    built here, and that was a tenth of what decoding a payload cost."""
    made: Signature = _new(Signature)
    set_sig, set_seqs, set_also, set_header = _SIGNATURE_FIELDS
    set_sig(made, sig)
    set_seqs(made, seqs)
    set_also(made, also)
    set_header(made, header)
    return made


def received_delta(
    uid: str,
    origin: str,
    doc_id: str,
    hlc: str,
    deps: bytes,
    update: bytes,
    channels: tuple[str, ...],
    seqs: dict[str, int],
    also: dict[str, tuple[int, ...]],
    signature: Signature | None,
    header: Signature | None,
) -> DeltaRecord:
    """``DeltaRecord(...)`` with every field given, built as :func:`received_signature` is."""
    made: DeltaRecord = _new(DeltaRecord)
    (set_uid, set_origin, set_doc, set_hlc, set_deps, set_update, set_channels, set_seqs, set_also,
     set_signature, set_header) = _DELTA_FIELDS  # fmt: skip
    set_uid(made, uid)
    set_origin(made, origin)
    set_doc(made, doc_id)
    set_hlc(made, hlc)
    set_deps(made, deps)
    set_update(made, update)
    set_channels(made, channels)
    set_seqs(made, seqs)
    set_also(made, also)
    set_signature(made, signature)
    set_header(made, header)
    return made


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
    """Documents to forget (see the port, :mod:`crdtmem.store.base`), before this commit's deltas
    are logged: a unit that forgets a memory logs its erase marker in ``deltas``, which stays whole."""

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


def stub_proof(delta: DeltaRecord) -> Signature | None:
    """What stays verifiable of ``delta`` once it is a stub: its origin's header signature."""
    signed = delta.signature
    if signed is not None and signed.header is not None:
        return Signature(signed.header, dict(signed.seqs), dict(signed.also))
    return delta.header


def fold(stored: StoredDoc) -> bytes:
    """A stored document's snapshot and tail as one Yrs update: its whole state."""
    parts = ([stored.snapshot] if stored.snapshot else []) + [update for _, update in stored.tail]
    if len(parts) == 1:
        return parts[0]
    doc = YDoc()
    for part in parts:
        client = rebase_client(part)
        # a new epoch of the document replaces what came before; the entry of the epoch the document
        # took from a state (logged after deltas of its epoch, MemoryDoc.from_parts) is held already
        if client is not None and ((current := epoch_of(doc)) is None or current.client != client):
            doc = YDoc()
        doc.apply_update(part)
    return doc.get_update()
