"""Lazy sync merges the deltas of one document from one origin before sending them.

Rule: deltas ``d1 .. dn`` of one document by one origin (in this replica's log order, which is causal)
form a run when each ``d(i+1)`` was written on exactly the state ``d(i)`` left behind, i.e. no other
writer's change to that document arrived between them. Then ``merge_updates(d1 .. dn)`` needs only
``d1``'s dependencies, so the merged delta carries ``d1.deps``, every member's sequence numbers
(``seqs`` + ``also``), the last member's hlc, and the uid ``{origin}:{last hlc}/{first hlc}``.

"Written on the state d(i) left behind" is checked from the deps alone: ``deps(i+1)`` must equal
``deps(i)`` on every Yrs client except the one that wrote ``d(i)`` (whose clock ``d(i)`` advanced).
A local delta's update holds the structs of exactly one client (the writer's), read from the update's
header; an update with structs of several clients never starts or extends a run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import pycrdt

from ..document import statevector
from ..errors import MalformedPayload
from ..store.base import DeltaRecord
from .signing import Signer

MAX_RUN = 1_000


def writer_client(update: bytes) -> int | None:
    """The Yrs client id whose structs a v1 update holds; None if none; -1 if several."""
    try:
        block = statevector.first_block(update)
    except MalformedPayload:
        return -1
    if block is None:
        return None
    blocks, client, _ = block
    return client if blocks == 1 else -1


def _follows(previous: DeltaRecord, following: DeltaRecord) -> bool:
    writer = writer_client(previous.update)
    if writer == -1 or writer_client(following.update) == -1:
        return False
    try:
        before, after = statevector.decode(previous.deps), statevector.decode(following.deps)
    except MalformedPayload:
        return False
    clients = (set(before) | set(after)) - ({writer} if writer is not None else set())
    return all(before.get(c, 0) == after.get(c, 0) for c in clients)


def coalesce(
    deltas: Iterable[DeltaRecord], own_origin: str = "", signer: Signer | None = None
) -> list[DeltaRecord]:
    """Merge runs of same-document, same-origin deltas; other deltas pass through unchanged.

    A merged delta takes the position of its first member, which is causally safe: every member
    depends only on what the first depended on plus the earlier members.

    Only merges whose signature survives: runs of unsigned deltas (the result is unsigned), and runs
    of this replica's own signed deltas (``own_origin``, signed again with ``signer`` over the merged
    claim). Another origin's signed deltas pass through as they are: a relay cannot sign for them.
    """
    out: list[DeltaRecord | list[DeltaRecord]] = []
    open_runs: dict[tuple[str, str], list[DeltaRecord]] = {}
    for delta in deltas:
        key = (delta.doc_id, delta.origin)
        run = open_runs.get(key)
        signed = delta.signature is not None
        mergeable = not signed or (signer is not None and delta.origin == own_origin)
        if (
            run is not None
            and mergeable
            and len(run) < MAX_RUN
            and (run[-1].signature is not None) == signed
            and set(run[-1].seqs) == set(delta.seqs)
            and _follows(run[-1], delta)
        ):
            run.append(delta)
            continue
        run = [delta]
        open_runs[key] = run
        out.append(run)
    return [_merge(item, signer) if isinstance(item, list) else item for item in out]


def _merge(run: list[DeltaRecord], signer: Signer | None) -> DeltaRecord:
    if len(run) == 1:
        return run[0]
    first, last = run[0], run[-1]
    merged = dataclasses.replace(
        last,
        uid=f"{last.origin}:{last.hlc}/{first.hlc}",
        deps=first.deps,
        update=bytes(pycrdt.merge_updates(*(d.update for d in run))),
        also=_covered(run, last.seqs, lambda d: (d.seqs, d.also)),
    )
    if last.signature is None or signer is None:
        return merged
    claim = {c: max(d.signature.seqs[c] for d in run if d.signature) for c in last.signature.seqs}
    claim_also = _covered(
        run, claim, lambda d: (d.signature.seqs, d.signature.also) if d.signature else ({}, {})
    )
    return dataclasses.replace(merged, signature=signer.sign(merged, claim, claim_also))


def _covered(
    run: list[DeltaRecord],
    seqs: dict[str, int],
    view: Callable[[DeltaRecord], tuple[dict[str, int], dict[str, tuple[int, ...]]]],
) -> dict[str, tuple[int, ...]]:
    """Every member's seqs in each channel of ``seqs``, but the highest: the merged ``also``."""
    also: dict[str, tuple[int, ...]] = {}
    for channel in seqs:
        covered: set[int] = set()
        for delta in run:
            member_seqs, member_also = view(delta)
            if channel in member_seqs:
                covered.update((*member_also.get(channel, ()), member_seqs[channel]))
        also[channel] = tuple(sorted(covered)[:-1])
    return also
