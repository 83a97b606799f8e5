"""Causal delivery of remote deltas to memory documents.

A delta carries the state vector its writer had seen (``deps``). It is applied only once the local
document covers those dependencies; until then it waits (durably, in the store's pending table). This
keeps Yrs from ever holding pending structs, which its state encoding would not persist, and it means a
replica's local log order is always a causal order, which is what it relays to others.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from ..document import statevector
from ..document.memory import MemoryDoc
from ..store.base import DeltaRecord


def apply_causally(
    candidates: list[DeltaRecord],
    load: Callable[[str], MemoryDoc],
    validated: Collection[str] = (),
) -> tuple[list[DeltaRecord], list[DeltaRecord]]:
    """Apply every delta whose dependencies are met, repeatedly, until no more can be applied.

    Args:
        candidates: deltas not yet applied here, in arrival order.
        load: returns the (possibly empty) document for a memory id; the same object each call.
        validated: uids of deltas whose updates were decoded whole before (deltas that waited:
            decoding every waiting delta again on every arrival made each push cost the whole
            waiting set).

    Returns:
        ``(applied, waiting)``: the deltas applied, in the order they were applied, and the rest.
    """
    waiting = candidates
    applied: list[DeltaRecord] = []
    vectors: dict[str, statevector.StateVector] = {}  # each document's vector, kept current
    progress = True
    while waiting and progress:
        progress = False
        still: list[DeltaRecord] = []
        for delta in waiting:
            doc = load(delta.doc_id)
            need = statevector.dependencies(delta.deps, delta.update)
            have = vectors.get(delta.doc_id)
            if have is None:
                have = vectors[delta.doc_id] = doc.state_vector()
            if statevector.covers(have, need):
                doc.apply(delta.update)  # raises MalformedPayload for an update that does not decode
                del vectors[delta.doc_id]  # read again only if another delta of this document needs it
                applied.append(delta)
                progress = True
            else:
                if delta.uid not in validated:
                    statevector.validate(delta.update)  # never park garbage
                still.append(delta)
        waiting = still
    return applied, waiting
