"""The log as the outbox: every committed log entry is published to its channel's subject, and a
durable mark per ``(channel, origin)`` follows what the bus has acknowledged.

::

    commit ─▶ on_commit wakes the publisher ─▶ store.deltas_since(marks) ─▶ publish each entry
      (Nats-Msg-Id = (origin, channel, seq)) ─▶ PubAck ─▶ raise the mark (one small transaction)

A crash between a commit and the PubAck, or between the PubAck and the mark, leaves the mark behind:
the next start publishes those entries again, and the stream's duplicate window drops the copies
(past the window a copy is stored twice and receivers count it as a duplicate). Nothing acknowledged
is skipped: the mark only passes an entry that the bus acknowledged, that arrived from the bus (it
is in the stream already), or that the log holds without a delta (decided against, never exported).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from ..engine import payload as wire
from ..engine.replica import Replica
from ..metrics import Metrics
from ..store.base import DeltaRecord, VersionVector
from .subjects import Layout, message_id

log = logging.getLogger("crdtmem.bus")

SINK = "nats"
"""The outbox sink name of the NATS publisher in the store."""

Key = tuple[str, str]
"""``(channel, origin)``."""

PublishOne = Callable[[str, bytes, str, str], Awaitable[bool]]
"""``publish(subject, data, msg_id, stream) -> duplicate``: raises if the bus did not acknowledge."""


@dataclass
class _Pending:
    record: DeltaRecord
    data: bytes
    entries: list[tuple[str, int]] = field(default_factory=list)
    """``(channel, seq)`` to publish (the first seq of each channel names the message)."""


class Outbox:
    """What this node has handed to the bus, per ``(channel, origin)``: the durable mark (contiguous),
    and the sequence numbers above it known to be in the stream. Lives as long as the replica; the
    publishing loop (:meth:`publish_pending`) runs only while the bus is connected."""

    def __init__(self, replica: Replica, layout: Layout, metrics: Metrics, *, page: int = 512):
        self.replica = replica
        self.layout = layout
        self.metrics = metrics
        self.page = page
        self.marks: dict[str, VersionVector] = replica.store.outbox_marks(SINK)
        self._handed: dict[Key, set[int]] = {}
        self.wake = asyncio.Event()
        self.wake.set()  # publish what the log holds past the marks on the first connect
        self.published = 0
        self.duplicates = 0
        self._writing: asyncio.Future[None] | None = None

    async def settle(self) -> None:
        """Wait for a mark being written (the store must not close under it)."""
        if self._writing is not None and not self._writing.done():
            with contextlib.suppress(Exception):
                await self._writing

    def on_commit(self, deltas: list[DeltaRecord]) -> None:
        self.wake.set()

    def handed(self, channel: str, origin: str, seqs: Iterable[int]) -> None:
        """These entries are in the stream already (they came from it): never publish them."""
        mark = self.marks.get(channel, {}).get(origin, 0)
        fresh = [s for s in seqs if s > mark]
        if fresh:
            self._handed.setdefault((channel, origin), set()).update(fresh)

    def lag(self) -> int:
        """Log entries (contiguous per origin) not yet handed to the bus."""
        store = self.replica.store
        total = 0
        for channel in store.channels():
            marks = self.marks.get(channel, {})
            for origin, seq in store.version_vector(channel).items():
                total += max(0, seq - marks.get(origin, 0))
        return total

    async def publish_pending(self, publish: PublishOne) -> int:
        """Publish pages of the log past the marks until a page holds nothing new; returns how many
        entries were published. Raises (leaving the marks behind) if a publish fails."""
        total = 0
        while True:
            store = self.replica.store
            channels = store.channels()
            # the vectors before the page: every entry they claim is in the log the page reads
            held = {c: store.version_vector(c) for c in channels}
            page = store.deltas_since(channels, self.marks, self.page)
            todo = self._unpublished(page)
            if todo:
                await self._publish(todo, publish)
                total += sum(len(p.entries) for p in todo)
            raised = self._advance(page, held, complete=len(page) < self.page)
            if raised:
                # shielded: a cancelled publisher leaves the write to finish, and stop() waits for it
                writing = asyncio.to_thread(store.raise_outbox_marks, SINK, raised)
                self._writing = asyncio.ensure_future(writing)
                await asyncio.shield(self._writing)
                for channel, vector in raised.items():
                    self.marks.setdefault(channel, {}).update(vector)
            if not todo:
                return total

    def _unpublished(self, page: list[DeltaRecord]) -> list[_Pending]:
        out: list[_Pending] = []
        for record in page:
            pending = _Pending(record, b"")
            for channel in record.seqs:
                seqs = record.all_seqs(channel)
                done = self._handed.get((channel, record.origin), set())
                if not all(s in done for s in seqs):
                    pending.entries.append((channel, record.seqs[channel]))
            if pending.entries:
                keys = self.replica.keys_for([record])
                pending.data = wire.encode(wire.Payload(self.replica.id, [record], {}, keys))
                out.append(pending)
        return out

    async def _publish(self, todo: list[_Pending], publish: PublishOne) -> None:
        layout = self.layout

        async def one(item: _Pending, channel: str, seq: int) -> None:
            origin = item.record.origin
            duplicate = await publish(
                layout.subject(channel),
                item.data,
                message_id(origin, channel, seq),
                layout.stream_of(channel).name,
            )
            self._handed.setdefault((channel, origin), set()).update(item.record.all_seqs(channel))
            if duplicate:
                self.duplicates += 1
                self.metrics.inc("crdtmem_bus_publish_duplicates_total")
            else:
                self.published += 1
                self.metrics.inc("crdtmem_bus_published_total")

        results = await asyncio.gather(
            *(one(item, channel, seq) for item in todo for channel, seq in item.entries),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]

    def _advance(
        self, page: list[DeltaRecord], held: dict[str, VersionVector], *, complete: bool
    ) -> dict[str, VersionVector]:
        """New marks after a page: a mark passes an entry handed to the bus, or an entry the log
        held when the page was read that the page skipped (decided against: no delta to send), up
        to the highest entry the page returned (or every held entry, when the page was not full)."""
        returned: dict[Key, set[int]] = {}
        for record in page:
            for channel in record.seqs:
                returned.setdefault((channel, record.origin), set()).update(record.all_seqs(channel))
        keys = set(returned) | set(self._handed)
        if complete:
            keys |= {(c, o) for c, vector in held.items() for o in vector}
        raised: dict[str, VersionVector] = {}
        for channel, origin in keys:
            mark = start = self.marks.get(channel, {}).get(origin, 0)
            seen = returned.get((channel, origin), set())
            done = self._handed.get((channel, origin), set())
            stored = held.get(channel, {}).get(origin, 0)
            upto = stored if complete else min(stored, max(seen, default=0))
            while True:
                if mark + 1 in done or (mark + 1 <= upto and mark + 1 not in seen):
                    mark += 1
                else:
                    break
            if mark > start:
                raised.setdefault(channel, {})[origin] = mark
                done.difference_update(range(start + 1, mark + 1))
            if not done:
                self._handed.pop((channel, origin), None)
        return raised
