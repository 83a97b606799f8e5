"""Log compaction behind a horizon, with leases for peers that are away.

The log keeps every delta so that any peer can catch up from any vector. Once every peer that
syncs a channel holds an entry, the entry is only weight: its change lives on in the document's
snapshot. Compaction folds such entries (``Commit.fold``): they leave the log, and the store's
*horizon* records how far each (channel, origin) is folded. A peer whose vector is below the horizon
catches up from document states (:mod:`crdtmem.engine.catchup`), never by silently skipping.

Which entries fold, per channel and origin (``horizon``)::

    h = min(vector here,                          # only entries stored contiguously here
            every peer with a live lease,         # a lease holds the horizon for its peer
            every outbox (holds),                 # what a transport has not sent yet stays
            max(every known peer,                 # all acknowledged it ...
                older than the retention))        # ... or it is old enough (peers whose lease ran out)

A peer's acknowledgement is the vector it reported holding (a pull's vectors, a payload's
``vectors``, a link's acks); each one renews the peer's lease for ``lease_ms``. A peer that has not
synced within its lease stops holding the horizon back once the retention has passed, and then
catches up from states. With no peer known for a channel, everything stored contiguously folds.

Peers' marks are kept in the store (outbox marks of the sink ``peer:{name}``, the lease in meta),
written when a compaction runs and when the replica stops.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..clock import Hlc
from ..store.base import Commit, Store, VersionVector
from .committer import GroupCommitter
from .rebase import Rebaser
from .snapshots import BATCH, Snapshots

log = logging.getLogger("crdtmem.compaction")

DEFAULT_LEASE_MS = 7 * 24 * 3600 * 1000
"""A peer that synced within this long holds the horizon for it (a week)."""
PEERS_KEY = "compaction:peers"
_MAX_PEERS = 10_000


@dataclass
class PeerMark:
    vectors: dict[str, VersionVector] = field(default_factory=dict)
    expires_ms: int = 0
    dirty: bool = True


@dataclass(frozen=True, slots=True)
class Compacted:
    """What one compaction did."""

    folded: dict[str, VersionVector]
    """The horizon it raised, by channel (only where it moved)."""
    snapshots: int
    """Documents snapshotted first, so their tails could fold."""
    rebased: int = 0
    """Memories rebuilt without their tombstones (:mod:`crdtmem.engine.rebase`)."""


class Compaction:
    """The peers' acknowledgements and leases of one replica, and compaction. Use it from its loop."""

    def __init__(
        self,
        store: Store,
        committer: GroupCommitter,
        snapshots: Snapshots,
        wall: Callable[[], int],
        *,
        lease_ms: int = DEFAULT_LEASE_MS,
        retention_ms: int | None = None,
    ):
        self._store = store
        self._committer = committer
        self._snapshots = snapshots
        self._wall = wall
        self.lease_ms = lease_ms
        self.retention_ms = retention_ms
        """Entries older than this fold even if a known peer (whose lease ran out) lacks them."""
        self.peers: dict[str, PeerMark] = {}
        self.rebaser: Rebaser | None = None
        """Rebuilds memories whose folded documents are mostly tombstones, after each fold."""
        self.holds: list[Callable[[str], VersionVector]] = []
        """Others that must hold an entry before it folds, asked per channel: a transport whose
        outbox has not sent it yet (the NATS bus's publish marks, :mod:`crdtmem.bus.outbox`)."""
        self.runs = 0
        self.folded_entries = 0

    def load(self) -> None:
        names = json.loads(self._store.get_meta(PEERS_KEY) or "[]")
        for name in names:
            expires = int(self._store.get_meta(f"lease:{name}") or 0)
            self.peers[name] = PeerMark(self._store.outbox_marks(f"peer:{name}"), expires, dirty=False)

    def save(self) -> None:
        dirty = [(name, mark) for name, mark in self.peers.items() if mark.dirty]
        if not dirty:
            return
        for name, mark in dirty:
            self._store.raise_outbox_marks(f"peer:{name}", mark.vectors)
            self._store.set_meta(f"lease:{name}", str(mark.expires_ms))
            mark.dirty = False
        self._store.set_meta(PEERS_KEY, json.dumps(sorted(self.peers)))

    def acknowledged(self, peer: str, vectors: dict[str, VersionVector]) -> None:
        """``peer`` holds ``vectors`` (marks never go back) and synced now: its lease is renewed."""
        mark = self.peers.get(peer)
        if mark is None:
            if len(self.peers) >= _MAX_PEERS:
                return
            mark = self.peers[peer] = PeerMark()
        for channel, vector in vectors.items():
            mine = mark.vectors.setdefault(channel, {})
            for origin, seq in vector.items():
                if isinstance(seq, int) and seq > mine.get(origin, 0):
                    mine[origin] = seq
        mark.expires_ms = self._wall() + self.lease_ms
        mark.dirty = True

    def horizon(self, channel: str) -> VersionVector:
        """How far ``channel``'s log may fold now (module docstring)."""
        now = self._wall()
        here = self._store.version_vector(channel)
        known = [m.vectors[channel] for m in self.peers.values() if channel in m.vectors]
        live = [
            m.vectors[channel] for m in self.peers.values() if channel in m.vectors and m.expires_ms > now
        ]
        old: VersionVector = {}
        if self.retention_ms is not None:
            cutoff = Hlc(now - self.retention_ms, 0).encode()
            old = self._store.logged_before(channel, cutoff)
        horizon: VersionVector = {}
        for origin, seq in here.items():
            acked = min((v.get(origin, 0) for v in known), default=seq)
            h = min(seq, max(acked, old.get(origin, 0)))
            for v in live:
                h = min(h, v.get(origin, 0))
            for hold in self.holds:
                h = min(h, hold(channel).get(origin, 0))
            if h > self._store.horizon(channel).get(origin, 0):
                horizon[origin] = h
        return horizon

    async def compact(self) -> Compacted:
        """Fold what may fold now: snapshot the documents whose tails hold such entries, then fold."""
        self.save()
        fold = {c: h for c in self._store.channels() if (h := self.horizon(c))}
        taken = 0
        if fold:
            blockers = self._store.fold_blockers(fold)
            for start in range(0, len(blockers), BATCH):
                taken += await self._snapshots.take(blockers[start : start + BATCH])
            before = {c: self._store.horizon(c) for c in fold}
            await self._committer.submit(Commit(fold=fold))
            moved = {}
            for channel in fold:
                after = self._store.horizon(channel)
                gained = {o: s for o, s in after.items() if s > before[channel].get(o, 0)}
                if gained:
                    moved[channel] = gained
                    self.folded_entries += sum(s - before[channel].get(o, 0) for o, s in gained.items())
            fold = moved
        rebased = 0
        if self.rebaser is not None:
            rebased = await self.rebaser.run([m.vectors for m in self.peers.values()])
        self.runs += 1
        if fold:
            log.info("compacted the log of %d channel(s) (%d snapshots first)", len(fold), taken)
        return Compacted(fold, taken, rebased)

    def status(self) -> dict[str, Any]:
        now = self._wall()
        return {
            "runs": self.runs,
            "folded_entries": self.folded_entries,
            "rebased": self.rebaser.rebased if self.rebaser is not None else 0,
            "lease_ms": self.lease_ms,
            "retention_ms": self.retention_ms,
            "peers": {
                name: {"lease_expires_in_ms": max(0, mark.expires_ms - now)}
                for name, mark in self.peers.items()
            },
        }
