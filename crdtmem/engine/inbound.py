"""Sorting an inbound payload before anything is applied: clock checks and triage.

Both are pure with respect to the replica: they read the store and the pending set, and decide.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass

from ..clock import Hlc, HybridLogicalClock
from ..errors import InvalidInput, MalformedPayload
from ..events import MemoryEvent
from ..store.base import DeltaRecord, Store


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What :meth:`Replica.apply` did with a payload."""

    applied: int
    """Deltas applied and stored."""
    duplicates: int
    """Deltas this replica already had (harmless: apply is idempotent)."""
    pending: int
    """Deltas stored here waiting for causal dependencies that have not arrived yet (all senders)."""
    ignored: int
    """Deltas only for channels this replica does not subscribe to."""
    events: tuple[MemoryEvent, ...] = ()
    rejected: int = 0
    """Deltas refused on their own while the rest applied (see :mod:`crdtmem.engine.remote`): a link's or a
    pull's delta that fails its checks, or one resent after that; and every unauthenticated one."""
    denied: int = 0
    """Of those, deltas whose sender may not write their memory, decided against durably (their
    entries are logged without them, so the stream behind flows); see :mod:`crdtmem.engine.remote`."""
    parked: int = 0
    """Deltas of this payload now waiting (for their dependencies, or for a memory their sender
    cannot see here)."""
    unauthenticated: int = 0
    """Of those, deltas whose sender may not introduce their origin (:mod:`crdtmem.engine.trust`):
    never applied, logged or parked."""


@dataclass(frozen=True, slots=True)
class Triage:
    fresh: list[DeltaRecord]
    """Not stored here yet: to apply."""
    relog: list[DeltaRecord]
    """Stored, but with sequence numbers in channels not logged yet: to log only."""
    duplicates: int
    """Already here, or decided against here (a decision is logged, so a resent copy is a duplicate)."""
    ignored: int


def check_clocks(clock: HybridLogicalClock, deltas: Sequence[DeltaRecord]) -> Hlc | None:
    """Refuse the payload if any delta's stamp is malformed or too far ahead; return the newest
    stamp. Only the newest is decoded and checked: no other stamp is further ahead."""
    newest: str | None = None
    for delta in deltas:
        text = delta.hlc
        if not Hlc.is_encoded(text):
            try:
                Hlc.decode(text)  # refuses it, saying why
            except InvalidInput as exc:
                raise MalformedPayload(f"delta {delta.uid!r}: {exc}") from exc
            raise MalformedPayload(f"delta {delta.uid!r}: not an HLC timestamp: {text!r}")
        if newest is None or text > newest:
            newest = text
    if newest is None:
        return None
    stamp = Hlc.decode(newest)
    clock.check(stamp)
    return stamp


def triage(
    deltas: Sequence[DeltaRecord],
    store: Store,
    pending: Container[str],
    subscribed: Callable[[str], bool],
) -> Triage:
    """Split deltas into new ones, known ones with new channel entries, duplicates and ignored
    (only for channels this replica does not subscribe to). Unsubscribed channels are stripped."""
    fresh: list[DeltaRecord] = []
    relog: list[DeltaRecord] = []
    duplicates = ignored = 0
    seen: set[str] = set()
    stored = store.logged_deltas([d.uid for d in deltas])
    for delta in deltas:
        seqs = {c: s for c, s in delta.seqs.items() if subscribed(c)}
        also = {c: s for c, s in delta.also.items() if c in seqs}
        if not seqs:
            ignored += 1
            continue
        if delta.uid in seen or delta.uid in pending:
            duplicates += 1
            continue
        seen.add(delta.uid)
        if len(seqs) != len(delta.seqs) or len(also) != len(delta.also) or delta.channels != tuple(seqs):
            delta = dataclasses.replace(delta, seqs=seqs, channels=tuple(seqs), also=also)
        logged = all(store.is_logged(c, delta.origin, s) for c in seqs for s in delta.all_seqs(c))
        if logged:  # under this uid, or under a coalesced one that covered it: nothing new
            duplicates += 1
        elif delta.uid not in stored:
            fresh.append(delta)
        else:
            relog.append(delta)
    return Triage(fresh, relog, duplicates, ignored)
