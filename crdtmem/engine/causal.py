"""Causal delivery of remote deltas to memory documents.

A delta carries the state vector its writer had seen (``deps``). It is applied only once the local
document covers those dependencies; until then it waits (durably, in the store's pending table). This
keeps Yrs from ever holding pending structs, which its state encoding would not persist, and it means a
replica's local log order is always a causal order, which is what it relays to others.

A rebased memory (:mod:`crdtmem.document.epoch`) adds two cases. A rebase entry depends on its own
first struct, so no document ever covers it: it replaces the document, and when the document holds
changes the epoch lacks (made concurrently with the rebase) they are carried over onto the epoch as
a change of this replica's (:mod:`crdtmem.document.carry`, left in ``MemoryDoc.carried`` for the
caller to log); the entry of the document's own epoch, taken from a state whose covers did not hold
the entry, is held already and applied as a duplicate (logged, so relayed). A delta of an earlier
epoch than the document's, or an earlier epoch's entry, is *superseded*: never applied,
logged as decided. Either the epoch holds its effect already, or it was made concurrently with the
rebase, and then its origin, which holds it, carries it over when it takes the epoch. A delta
that names no epoch client this document knows may be of a later epoch whose rebase entry has not
arrived (reordered, or lost and sent again): when it names a client that none of its epochs' bases
holds, nor the document, and that wrote no delta of the memory seen here (an epoch's client writes
only its rebase entry), it waits for its dependencies like any delta, until its origin's later
delta of the memory made on an epoch this document knows arrives: a replica's epochs only move
forward, so the waiting delta was made on epoch 0 (a client seen here only in a dropped state of
epoch 0, or in a folded delta, leaves no other trace).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from ..document import epoch as epochs
from ..document import statevector
from ..document.memory import MemoryDoc
from ..errors import EpochMismatch
from ..store.base import DeltaRecord


def apply_causally(
    candidates: list[DeltaRecord],
    load: Callable[[str], MemoryDoc],
    validated: Collection[str] = (),
    carry_as: str | None = None,
    known: Known | None = None,
    logged: Callable[[str], list[DeltaRecord]] | None = None,
) -> tuple[list[DeltaRecord], list[DeltaRecord], list[DeltaRecord]]:
    """Apply every delta whose dependencies are met, repeatedly, until no more can be applied.

    Args:
        candidates: deltas not yet applied here, in arrival order.
        load: returns the (possibly empty) document for a memory id; the same object each call.
        validated: uids of deltas whose updates were decoded whole before (deltas that waited:
            decoding every waiting delta again on every arrival made each push cost the whole
            waiting set).
        known: what was read of deltas before (whether each is a rebase entry, what it needs), by
            uid; used for the very same record only (its ``deps`` and ``update`` objects), and
            filled here for the deltas that wait (not for those applied at once). The caller
            keeps it across applies for the deltas still waiting: reading them again on every
            push to their memory cost ~20 us per waiting delta.
        logged: the deltas of a memory logged or decided against here (superseded ones among
            them: of an earlier epoch); read once per memory, and only for a delta that may be of
            a later epoch: the Yrs clients that wrote them, and a later delta of its origin's
            (:func:`_placed_later`).

    Returns:
        ``(applied, waiting, superseded)``: the deltas applied (superseded ones among them), in the
        order they were applied; the rest; and those of ``applied`` that were superseded (module
        docstring), to be logged without their content.

    Raises:
        EpochMismatch: without ``carry_as``, a rebase entry or a delta of an earlier epoch that
            the document cannot take without losing changes (made concurrently with the rebase);
            with it, a rebase entry of another lineage.
    """
    waiting = candidates
    applied: list[DeltaRecord] = []
    superseded: list[DeltaRecord] = []
    vectors: dict[str, statevector.StateVector] = {}  # each document's vector, kept current
    # each document's epoch, read again only after a delta changed the document: reading it walks
    # the document's root, and a memory with thousands of waiting deltas was read once per delta
    epoch_of: dict[str, epochs.Epoch | None] = {}
    # by memory, read only for deltas that may be of a later epoch
    logged_of: dict[str, list[DeltaRecord]] = {}
    writers: dict[str, set[int]] = {}

    def logged_here(doc_id: str) -> list[DeltaRecord]:
        if doc_id not in logged_of:
            logged_of[doc_id] = list(logged(doc_id)) if logged else []
        return logged_of[doc_id]

    def writers_of(doc_id: str) -> set[int]:
        if doc_id not in writers:
            found = writers[doc_id] = {_writer(d) for d in logged_here(doc_id)}
            found.update(_writer(d) for d in candidates if d.doc_id == doc_id and not _is_rebase(d))
            found.discard(-1)
        return writers[doc_id]

    def later_of(delta: DeltaRecord) -> list[DeltaRecord]:
        return [*logged_here(delta.doc_id), *applied]

    progress = True
    while waiting and progress:
        progress = False
        still: list[DeltaRecord] = []
        for delta in waiting:
            doc = load(delta.doc_id)
            if delta.doc_id in epoch_of:
                rebased = epoch_of[delta.doc_id]
            else:
                rebased = epoch_of[delta.doc_id] = doc.epoch
            rebase = None if rebased is not None else _read(delta, known, "rebase", _is_rebase)
            if rebased is not None or rebase:
                taken = _across_epochs(doc, rebased, delta, carry_as, writers_of, later_of)
                if taken is not None:
                    vectors.pop(delta.doc_id, None)
                    epoch_of.pop(delta.doc_id, None)
                    applied.append(delta)
                    if not taken:
                        superseded.append(delta)
                        if delta.doc_id in writers:
                            writers[delta.doc_id].add(_writer(delta))
                    progress = True
                    continue
            need = _read(delta, known, "need", _need)
            have = vectors.get(delta.doc_id)
            if have is None:
                have = vectors[delta.doc_id] = doc.state_vector()
            if statevector.covers(have, need):
                doc.apply(delta.update)  # raises MalformedPayload for an update that does not decode
                del vectors[delta.doc_id]  # read again only if another delta of this document needs it
                epoch_of.pop(delta.doc_id, None)
                applied.append(delta)
                progress = True
            else:
                if delta.uid not in validated:
                    statevector.validate(delta.update)  # never park garbage
                if known is not None:  # kept for deltas that wait only: most apply at once
                    _remember(delta, known, "need", need)
                    if rebase is not None:
                        _remember(delta, known, "rebase", rebase)
                still.append(delta)
        waiting = still
    return applied, waiting, superseded


Known = dict[tuple[str, str], tuple[bytes, bytes, Any]]
"""``(uid, what) -> (deps, update, value)``: see :func:`apply_causally`'s ``known``."""


def _is_rebase(delta: DeltaRecord) -> bool:
    return epochs.is_rebase(delta.deps, delta.update)


def _need(delta: DeltaRecord) -> statevector.StateVector:
    return statevector.dependencies(delta.deps, delta.update)


def _read(delta: DeltaRecord, known: Known | None, what: str, read: Callable[[DeltaRecord], Any]) -> Any:
    """``read(delta)``, or what it gave before for this very record (its bytes are the same objects:
    a different record under the same uid is read anew)."""
    if known:
        hit = known.get((delta.uid, what))
        if hit is not None:
            if hit[0] is delta.deps and hit[1] is delta.update:
                return hit[2]
            value = read(delta)  # what was kept of another record under this uid is replaced
            _remember(delta, known, what, value)
            return value
    return read(delta)


def _remember(delta: DeltaRecord, known: Known, what: str, value: Any) -> None:
    """Keep what was read of a delta that waits, for :func:`_read`."""
    known[(delta.uid, what)] = (delta.deps, delta.update, value)


def _writer(delta: DeltaRecord) -> int:
    """The Yrs client that wrote a delta (-1: none)."""
    try:
        block = statevector.first_block(delta.update)
    except Exception:
        return -1
    return block[1] if block is not None else -1


def _across_epochs(
    doc: MemoryDoc,
    current: epochs.Epoch | None,
    delta: DeltaRecord,
    carry_as: str | None,
    writers: Callable[[str], set[int]] = lambda doc_id: set(),
    seen: Callable[[DeltaRecord], list[DeltaRecord]] = lambda delta: [],
) -> bool | None:
    """Apply a rebase entry, or settle a delta of an earlier epoch: True if it changed the document,
    False if it is superseded, None if it is of the document's epoch (the ordinary rule applies)."""
    incoming = epochs.rebase_epoch(delta.update) if epochs.is_rebase(delta.deps, delta.update) else None
    if incoming is not None:
        if current is not None and incoming.client == current.client and epochs.holds(doc.doc, delta.update):
            return True  # the entry of the epoch taken from a state: a duplicate, logged and relayed
        if current is not None and any(c == incoming.client for c, _ in current.chain()):
            return False  # an earlier epoch's entry
        doc.adopt_carrying(delta.update, incoming, carry_as)
        return True
    made_on = epochs.delta_epoch(current, delta.deps) if current is not None else 0
    if current is None or made_on == current.n:
        return None
    if (
        made_on == 0
        and epochs.unplaced(current, delta.deps, doc.state_vector() | dict.fromkeys(writers(delta.doc_id), 1))
        and not _placed_later(current, delta, seen(delta))
    ):
        return None  # maybe of a later epoch: it waits for its rebase entry like any dependency
    if carry_as is not None or epochs.covered(current, delta.deps, delta.update):
        return False
    raise EpochMismatch(
        f"delta {delta.uid} of memory {delta.doc_id} was made on epoch "
        f"{epochs.delta_epoch(current, delta.deps)}, concurrently with its rebase to epoch {current.n}, "
        "and holds changes that epoch lacks"
    )


def _placed_later(current: epochs.Epoch, delta: DeltaRecord, seen: list[DeltaRecord]) -> bool:
    """Whether ``delta``'s origin wrote a later delta of the memory (a higher stamp: one replica's
    stamps only grow) on one of ``current``'s epochs 1 .. n (its ``deps`` name that epoch's client).
    A replica's document only moves to later epochs, so ``delta`` was made on one of epochs 0 .. n,
    and naming none of the clients of epochs 1 .. n, on epoch 0: it cannot be of a later epoch than
    the document's, whatever clients it names that this replica never saw (seen only in a state of
    epoch 0 it dropped, or in deltas its log folded)."""
    return any(
        other.origin == delta.origin
        and other.doc_id == delta.doc_id
        and other.hlc > delta.hlc
        and epochs.delta_epoch(current, other.deps) > 0
        for other in seen
    )
