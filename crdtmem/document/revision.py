"""A document's *revision*: one integer, computed from its merged Yrs state alone, that every replica
holding the same state computes alike and that grows with every change any replica merges.

A replica's own ``version`` of a memory counts its local commits, so two replicas number the same
state differently; the revision does not. It is what a search index shared by several nodes stamps
on a point, so that a node that has not yet merged a change never overwrites the point a node that
has merged it wrote (``index/indexer.py``, ``docs/scale-out.md``).

The rule. A Yrs state is a set of items, identified by ``(client, clock)``, and the subset of them
that is deleted; merging is the union of both (deletions are never undone). Causal delivery keeps
every client's clocks contiguous, so the items are counted by the state vector. Then::

    size     = sum(state vector clocks) + number of deleted items
    revision = size * 2**16 + tie      # tie: 16 bits of a digest of (state vector, delete set)

- If state ``A`` is contained in state ``B`` and differs from it, ``size(A) < size(B)``, so
  ``revision(A) < revision(B)``: a point built from a state that has seen more always wins, whatever
  order the writes reach the index in. In particular the merged state of two concurrent ones wins
  over both.
- Two different states that contain neither the other (concurrent changes not yet merged) compare
  by size, then by the digest: deterministic, the same order on every node. Which one the index
  shows until their merge arrives is arbitrary, but every node agrees on it.
- Equal revisions mean equal states, except for a 2**-16 chance of a digest collision between two
  concurrent states of the same size; both are then transient (their merge is larger).

Bounds: the revision stays below 2**53 while a document has fewer than 2**37 items and deletions, so
it survives JSON numbers and the float ranges of Qdrant's filters exactly.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from ..errors import MalformedPayload
from . import statevector
from .statevector import StateVector
from .yroots import YDoc

TIE_BITS = 16
DeleteSet = dict[int, list[tuple[int, int]]]
"""``{client: [(clock, length), ...]}``: the deleted items, as sorted, non-overlapping ranges."""


class YState(Protocol):
    """A Yrs document: a ``pycrdt.Doc`` or crdtmem's ``YDoc``."""

    def get_state(self) -> bytes: ...

    def get_update(self, state: bytes | None = None) -> bytes: ...


def delete_set(doc: YState) -> DeleteSet:
    """The deleted items of ``doc``, canonical: ranges sorted, merged where they touch.

    Yrs encodes an update against the document's own state vector as no structs and the whole
    delete set, so this costs one pass over the document's blocks."""
    return decode_delete_set(bytes(doc.get_update(doc.get_state())))


def decode_delete_set(update: bytes) -> DeleteSet:
    """The delete set of a v1 update that carries no structs (see :func:`delete_set`)."""
    values = statevector._varuints(update)
    if not values or values[0] != 0:
        raise MalformedPayload("expected an update without structs")
    if len(values) < 2:
        raise MalformedPayload("truncated delete set")
    at, clients = 2, values[1]
    found: DeleteSet = {}
    for _ in range(clients):
        if at + 2 > len(values):
            raise MalformedPayload("truncated delete set")
        client, count = values[at], values[at + 1]
        at += 2
        if at + 2 * count > len(values):
            raise MalformedPayload("truncated delete set")
        ranges = sorted(
            zip(values[at : at + 2 * count : 2], values[at + 1 : at + 2 * count : 2], strict=True)
        )
        at += 2 * count
        found[client] = _merge(found.get(client, []) + ranges)
    if at != len(values):
        raise MalformedPayload("trailing bytes after the delete set")
    return {client: ranges for client, ranges in found.items() if ranges}


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for clock, length in sorted(ranges):
        if length <= 0:
            continue
        if merged and clock <= merged[-1][0] + merged[-1][1]:
            start, held = merged[-1]
            merged[-1] = (start, max(held, clock + length - start))
        else:
            merged.append((clock, length))
    return merged


def size(vector: StateVector, deleted: DeleteSet) -> int:
    """Items integrated plus items deleted: strictly grows with every change merged."""
    return sum(vector.values()) + sum(length for ranges in deleted.values() for _, length in ranges)


def tie(vector: StateVector, deleted: DeleteSet) -> int:
    """16 bits of a digest of the canonical state vector and delete set."""
    digest = hashlib.blake2b(digest_size=8)
    for client in sorted(vector):
        digest.update(f"{client}:{vector[client]};".encode())
    digest.update(b"|")
    for client in sorted(deleted):
        digest.update(f"{client}:".encode())
        for clock, length in deleted[client]:
            digest.update(f"{clock}+{length},".encode())
        digest.update(b";")
    return int.from_bytes(digest.digest(), "big") >> (64 - TIE_BITS)


def revision_of(doc: YState) -> int:
    """The revision of ``doc``'s current state (see the module docstring)."""
    vector = statevector.decode(bytes(doc.get_state()))
    deleted = delete_set(doc)
    return (size(vector, deleted) << TIE_BITS) | tie(vector, deleted)


def revision_of_state(state: bytes) -> int:
    """The revision of a whole document state (an update from the empty document)."""
    doc = YDoc()
    try:
        doc.apply_update(state)
    except Exception as exc:  # pycrdt raises plain ValueError/RuntimeError variants
        raise MalformedPayload(f"state does not decode as a Yrs update: {exc}") from exc
    return revision_of(doc)
