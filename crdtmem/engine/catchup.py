"""Catching up from document states: for a peer whose vector is below the horizon of the log.

Once compaction folded entries (:mod:`crdtmem.engine.compaction`), the log cannot give them to a
peer that lacks them. Such a peer gets a *states page* instead (``docs/protocol.md`` §7.10)::

    {"format": "crdtmem.states", "v": 1, "from": <replica id>, "channels": [channel, ...],
     "states": [[memory id, <Yrs update of the whole document>], ...],
     "covers": {channel: {origin: seq}},   # the exporter's vectors when the first page was made
     "next": <memory id> | nil,            # more pages: ask again with after=next and these covers
     "markers": [delta, ...]}              # last page: the erase markers of these channels (§7.9)

Every document of the channels comes, in id order (which changed since the peer's vector cannot be
told once the log is folded). The receiver merges each state into its document (``apply_update``:
idempotent), checks the memory like a delta (its id, unchanged channels, on one of the page's
channels, and that the sender may write every one of them), stores it as the document's snapshot,
and, on the last page, raises its vectors (and its own horizon) to ``covers``: the states of all
pages hold everything those vectors claim, because they were read after the vectors. Then it pulls
deltas from ``covers`` on as usual. A state is the exporter's word, not its origins': the receiver
trusts the peer it catches up from for what the states hold (``docs/protocol.md`` §10).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from ..access import OPEN, Principal, may_write_memory
from ..clock import Hlc, HybridLogicalClock
from ..document.erasure import is_marker
from ..document.memory import MemoryDoc
from ..document.records import Memory
from ..errors import CrdtmemError, MalformedPayload, PayloadTooLarge, UnsupportedVersion
from ..ids import Channel
from ..store.base import Commit, DocWrite, Snapshot, Store, VersionVector, behind
from ..store.codec import delta_from_list, delta_to_list
from . import payload as wire
from .changes import doc_write
from .locks import KeyedLocks
from .materialize import Materializer
from .publish import Publisher
from .workset import WorkingSet

log = logging.getLogger("crdtmem.catchup")

FORMAT = "crdtmem.states"
VERSION = 1
BATCH = 64
"""Documents merged and committed together."""


def is_states(data: bytes) -> bool:
    """Whether ``data`` looks like a states page (the full decode checks it)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return False  # the payload decoder says what is wrong with it
    return FORMAT.encode() in bytes(data[:48])


def is_behind(store: Store, vectors: dict[str, VersionVector], channels: Sequence[str]) -> bool:
    """Whether a peer at ``vectors`` misses folded entries of any of ``channels``."""
    return any(behind(store.horizon(c), vectors.get(c, {})) for c in channels)


@dataclass(frozen=True, slots=True)
class StatesPage:
    sender: str
    channels: list[str]
    states: list[tuple[str, bytes]]
    covers: dict[str, VersionVector]
    next: str | None
    markers: list[Any]


def export_states(
    store: Store,
    replica_id: str,
    channels: Sequence[str],
    *,
    after: str | None = None,
    limit: int | None = None,
    covers: dict[str, VersionVector] | None = None,
    max_bytes: int = wire.DEFAULT_MAX_PAYLOAD_BYTES,
) -> bytes:
    """One states page of ``channels`` (module docstring). ``covers``: the first page's, on later pages."""
    if covers is None:  # read before the states: every state read after holds what they claim
        covers = {c: store.version_vector(c) for c in channels}
    ids: set[str] = set()
    for channel in channels:
        ids.update(r["id"] for r in store.query_records(channel=channel, include_deleted=True))
    wanted = sorted(i for i in ids if after is None or i > after)
    states: list[tuple[str, bytes]] = []
    size, nxt = 0, None
    for doc_id in wanted:
        if (limit is not None and len(states) >= limit) or (states and size > max_bytes // 2):
            nxt = states[-1][0]
            break
        state = store.load_state(doc_id)
        if state is not None:
            states.append((doc_id, state))
            size += len(state) + len(doc_id)
    markers: list[Any] = []
    if nxt is None:
        markers = [
            delta_to_list(d, 2) for d in store.deltas_since(channels, {}) if is_marker(d.deps, d.update)
        ]
    body = {
        "format": FORMAT,
        "v": VERSION,
        "from": replica_id,
        "channels": list(channels),
        "states": [[i, s] for i, s in states],
        "covers": covers,
        "next": nxt,
        "markers": markers,
    }
    return bytes(msgpack.packb(body, use_bin_type=True))


def decode_states(data: bytes, *, max_bytes: int) -> StatesPage:
    """Parse and validate a states page; raises PayloadError subclasses."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"states page is {len(data)} bytes, over the limit of {max_bytes}")
    try:
        body = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
    except Exception as exc:
        raise MalformedPayload(f"states page is not valid msgpack: {exc}") from exc
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise MalformedPayload(f"not a states page (expected format {FORMAT!r})")
    if body.get("v") != VERSION or type(body.get("v")) is not int:
        raise UnsupportedVersion(f"states page version {body.get('v')!r}; this build reads {VERSION}")
    sender, channels, states = body.get("from"), body.get("channels"), body.get("states")
    nxt, raw_markers = body.get("next"), body.get("markers", [])
    if not isinstance(sender, str) or not sender:
        raise MalformedPayload("states page 'from' must be the sender's replica id")
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise MalformedPayload("states page 'channels' must be a list of channels")
    for channel in channels:
        try:
            Channel.parse(channel)
        except CrdtmemError as exc:
            raise MalformedPayload(f"states page: {exc}") from exc
    if not isinstance(states, list) or not all(
        isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and e[0] and isinstance(e[1], bytes)
        for e in states
    ):
        raise MalformedPayload("states page 'states' must be [[memory id, state bytes], ...]")
    if nxt is not None and not isinstance(nxt, str):
        raise MalformedPayload("states page 'next' must be a memory id or nil")
    if not isinstance(raw_markers, list):
        raise MalformedPayload("states page 'markers' must be a list of deltas")
    markers = [delta_from_list(raw, 2) for raw in raw_markers]
    covers = wire.check_vectors(body.get("covers", {}))
    return StatesPage(sender, list(channels), [(i, s) for i, s in states], covers, nxt, markers)


class CatchUp:
    """Applies states pages to one replica. Use it from the replica's loop."""

    def __init__(
        self,
        *,
        store: Store,
        work: WorkingSet,
        locks: KeyedLocks,
        publisher: Publisher,
        materializer: Materializer,
        clock: HybridLogicalClock,
        subscribed: Any,
    ):
        self._store = store
        self._work = work
        self._locks = locks
        self._publisher = publisher
        self._materializer = materializer
        self._clock = clock
        self._subscribed = subscribed
        self.rejected = 0
        self.pages = 0

    async def apply(self, page: StatesPage, sender: Principal | None) -> tuple[int, int]:
        """Merge the page's states and, on its last page, take its covers; returns (memories
        changed, memories refused)."""
        sender = sender or OPEN
        channels = [c for c in page.channels if self._subscribed(c)]
        changed = refused = 0
        for start in range(0, len(page.states), BATCH):
            batch = [(i, s) for i, s in page.states[start : start + BATCH] if not self._store.is_erased(i)]
            done, bad = await self._merge(batch, channels, sender, page.sender)
            changed, refused = changed + done, refused + bad
        if page.next is None:
            covers = {c: v for c, v in page.covers.items() if c in channels and sender.may_write(c) and v}
            if covers:
                await self._publisher.commit(Commit(covers=covers), {}, {}, {})
        self.pages += 1
        self.rejected += refused
        return changed, refused

    async def _merge(
        self, batch: list[tuple[str, bytes]], channels: list[str], sender: Principal, origin: str
    ) -> tuple[int, int]:
        ids = [doc_id for doc_id, _ in batch]
        refused = 0
        async with self._locks.hold(ids):
            writes: list[DocWrite] = []
            docs: dict[str, tuple[MemoryDoc, Memory]] = {}
            before: dict[str, Memory | None] = {}
            for doc_id, state in batch:
                try:
                    prior = self._materializer.before(doc_id)
                    doc = self._work.doc_to_merge(doc_id)
                    doc.apply(state)
                    write, memory = doc_write(doc, expected_id=doc_id, before=prior)
                    if prior is not None and set(prior.channels) != set(memory.channels):
                        raise MalformedPayload(f"the state of {doc_id} moves it to other channels")
                    if not set(memory.channels) & set(channels):
                        raise MalformedPayload(f"memory {doc_id} is on none of the page's channels")
                    if not may_write_memory(sender, memory.channels):
                        raise MalformedPayload(f"{sender.name} may not write memory {doc_id}")
                    self._clock.check(Hlc.decode(write.updated_hlc))
                except CrdtmemError as exc:
                    self._work.forget([doc_id])
                    refused += 1
                    log.warning("refused the state of memory %s from %s: %s", doc_id, sender.name, exc)
                    continue
                writes.append(write)
                docs[doc_id] = (doc, memory)
                before[doc_id] = prior
            if not writes:
                return 0, refused
            snaps = [Snapshot(i, doc.state(), doc.stored_upto) for i, (doc, _) in docs.items()]
            fresh = [i for i in docs if i in self._materializer]
            work = Commit(docs=writes, states=snaps, fresh=fresh)

            def landed() -> None:
                for snap in snaps:
                    doc = docs[snap.doc_id][0]
                    doc.tail_deltas = doc.tail_bytes = 0
                    doc.snapshot_bytes = len(snap.state)
                for doc_id in fresh:
                    self._materializer.taken(doc_id)

            await self._publisher.commit(work, docs, before, {i: origin for i in docs}, after=landed)
        return len(writes), refused
