"""The log as the outbox: every committed log entry is published to its channel's subject, and a
durable mark per ``(channel, origin)`` follows what the bus has acknowledged.

::

    commit ─▶ on_commit wakes the publisher ─▶ store.deltas_since(marks) ─▶ publish each entry
      (Nats-Msg-Id = (origin, channel, seq)) ─▶ PubAck ─▶ raise the mark in memory
      ─▶ at most every ``mark_interval`` seconds: the marks written (one small transaction)

A commit whose every entry came from the bus (the consumers' commits of the very deltas they told
:meth:`Outbox.arriving` of) holds nothing to publish: its marks rise without reading the log back, for
every such commit of the next ``BUS_MARKS_S`` at once.

Eager delivery of this node's own write takes a shorter way when nothing else is waiting: a commit
whose entries directly follow the marks (each the next sequence number of its channel after the
mark and the entries already queued this way) is published from its commit listener, as the
listener got its records, without reading the log (the message is the very bytes the log path
would publish; :mod:`crdtmem.bus.sendnow` hands it to the socket before the listener returns);
the publisher then waits for the PubAck and raises the marks. Anything else (an entry past a gap,
another origin's, a publisher that has not caught up with the log, a failed publish) takes the log
path: a page of the log past the marks, as above. Either way the marks only pass what the bus
acknowledged.

A crash between a commit and the PubAck, or between the PubAck and the written mark, leaves the
stored mark behind: the next start publishes those entries again, and the stream's duplicate window
(two minutes, far longer than ``mark_interval``) drops the copies (past the window a copy is stored
twice and receivers count it as a duplicate). Nothing acknowledged is skipped: the mark only passes
an entry that the bus acknowledged, that arrived from the bus (it is in the stream already), or that
the log holds without a delta (decided against, never exported).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from ..engine import payload as wire
from ..engine.coalesce import coalesce
from ..engine.erasure import with_markers
from ..engine.replica import Replica
from ..errors import CrdtmemError
from ..metrics import Metrics
from ..store.base import DeltaRecord, VersionVector, within_bytes
from .subjects import Layout, batch_id, message_id

log = logging.getLogger("crdtmem.bus")

SINK = "nats"
"""The outbox sink name of the NATS publisher in the store."""

Key = tuple[str, str]
"""``(channel, origin)``."""

PublishOne = Callable[[str, bytes, str, str], Awaitable[bool]]
"""``publish(subject, data, msg_id, stream) -> duplicate``: raises if the bus did not acknowledge."""

StartOne = Callable[[str, bytes, str, str], "asyncio.Future[bool]"]
"""``start(subject, data, msg_id, stream)``: the publish handed to the connection now; its future is
whether the stream had the message already, or fails if the bus did not acknowledge."""


Delivery = Literal["eager", "lazy"]


MISSED_RETRY_S = 0.05
"""How soon the log is read again after a page missed entries its vectors claimed."""

BUS_MARKS_S = 0.01
"""How long the marks of commits from the bus wait, so that a burst of them is raised at once."""

DIRECT_MAX = 512
"""Own records queued for the direct way at most (past that, e.g. while the bus is away: the log)."""


@dataclass
class _Pending:
    record: DeltaRecord
    entries: list[tuple[str, int]] = field(default_factory=list)
    """``(channel, seq)`` to publish (the first seq of each channel names the message)."""


@dataclass
class _Message:
    channel: str
    origin: str
    data: bytes
    msg_id: str
    seqs: set[int]
    """Every sequence number of ``(channel, origin)`` the message carries."""


class Outbox:
    """What this node has handed to the bus, per ``(channel, origin)``: the durable mark (contiguous),
    and the sequence numbers above it known to be in the stream. Lives as long as the replica; the
    publishing loop (:meth:`publish_pending`) runs only while the bus is connected."""

    def __init__(
        self,
        replica: Replica,
        layout: Layout,
        metrics: Metrics,
        *,
        page: int = 512,
        mark_interval: float = 0.2,
        delivery: Delivery = "eager",
        batch_max: int = 256,
        max_bytes: int = 512 * 1024,
    ):
        self.replica = replica
        self.layout = layout
        self.metrics = metrics
        self.page = page
        self.mark_interval = mark_interval
        """Seconds between two writes of the marks (a write costs a durable commit)."""
        self.delivery: Delivery = delivery
        """eager: a message per entry; lazy: a message per channel and origin holding up to
        ``batch_max`` entries (runs of one memory's deltas merged), at most ``max_bytes``."""
        self.batch_max = batch_max
        self.max_bytes = max_bytes
        self.messages = 0
        """Messages the bus acknowledged (lazy: fewer than the entries they carry)."""
        self.marks: dict[str, VersionVector] = replica.store.outbox_marks(SINK)
        """Where the bus has everything, per channel and origin (ahead of the stored marks by at
        most one write)."""
        self._handed: dict[Key, set[int]] = {}
        self._arriving: dict[str, list[tuple[str, DeltaRecord]]] = {}
        """Deltas taken from the stream and not yet applied, by uid, with the channel of the subject
        that carried each (:meth:`arriving`)."""
        self.wake = asyncio.Event()
        self.wake.set()  # publish what the log holds past the marks on the first connect
        self.published = 0
        self.duplicates = 0
        self.log_reads = 0
        """Pages read from the log (a commit of entries from the bus needs none)."""
        self.mark_writes = 0
        self._fresh = True
        """The log may hold entries to publish (else: only entries from the bus were committed)."""
        self._missed = False
        """A page missed entries the vectors claimed (read on an older snapshot of the file)."""
        self._unwritten: dict[str, VersionVector] = {}
        self._writer: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None
        self.direct = delivery == "eager"
        """Publish own entries that follow the marks from their commit (else: always the log path)."""
        self.direct_published = 0
        """Messages published the direct way, without a log read."""
        self._direct: list[DeltaRecord] = []
        """Own records of the last commits, to publish without reading the log (in commit order)."""
        self._ahead: dict[Key, int] = {}
        """The highest sequence number queued in ``_direct`` per channel and origin."""
        self._bus_marks: asyncio.TimerHandle | None = None
        self._start: StartOne | None = None
        """Publishes from the commit listener while a session is connected (eager only)."""
        self._flush: Callable[[], None] = _nothing
        self._ack_timeout = 0.0
        self._sent: list[tuple[list[DeltaRecord], list[tuple[_Message, asyncio.Future[bool]]]]] = []
        """Own records published from their commit, with their PubAcks to come (in commit order)."""

    def connect(self, start: StartOne, flush: Callable[[], None], ack_timeout: float) -> None:
        """A session is connected: own writes that follow the marks are published from their commit
        through ``start`` (then ``flush`` hands what a commit started to the socket), their PubAcks
        awaited (at most ``ack_timeout`` s) by the publisher."""
        self._start, self._flush, self._ack_timeout = (start if self.direct else None), flush, ack_timeout

    def disconnect(self) -> None:
        """The session ended: what was published from a commit and not acknowledged yet is published
        again from the log by the next session (the stream drops the copies)."""
        self._start, self._flush = None, _nothing
        if self._sent:
            for _, started in self._sent:
                for _, future in started:
                    _drop(future)
            self._sent.clear()
            self._to_log()

    async def settle(self) -> None:
        """Write the marks not written yet, and wait for that (the store must not close under it)."""
        if self._bus_marks is not None:
            self._bus_marks.cancel()
            self._raise_handed()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self._writing is not None and not self._writing.done():
            with contextlib.suppress(Exception):
                await self._writing
        with contextlib.suppress(CrdtmemError):
            await self._write_marks()

    def on_commit(self, deltas: list[DeltaRecord]) -> None:
        if self._arriving:
            self._took_arrivals(deltas)
        if deltas and all(self._in_stream(record) for record in deltas):
            # from the bus: nothing to publish; the marks rise with the others of the next moment
            if self._bus_marks is None:
                self._bus_marks = asyncio.get_running_loop().call_later(BUS_MARKS_S, self._raise_handed)
            return
        # a commit without deltas may have logged entries without one (decided against): a read
        # of the log lets the marks pass them
        if not (self.direct and deltas and not self._fresh and self._follows(deltas)):
            self._to_log()
        elif self._start is not None and len(self._direct) == len(deltas):
            self._send_direct(self._start)
        self.wake.set()

    def _to_log(self) -> None:
        """The next publish reads the log past the marks (nothing queued for the direct way)."""
        self._fresh = True
        self._direct.clear()
        self._ahead.clear()

    def _send_direct(self, start: StartOne) -> None:
        """Publish the queued own records now, from the commit listener; the publisher awaits the
        PubAcks. An encoding failure leaves them to the log path."""
        records, self._direct = self._direct, []
        layout = self.layout
        try:
            messages = self._messages([_Pending(record, list(record.seqs.items())) for record in records])
        except Exception:  # logged; the log path publishes them (and says why)
            log.exception("publishing a write from its commit failed; the log path publishes it")
            self._to_log()
            return
        started = [
            (m, start(layout.subject(m.channel), m.data, m.msg_id, layout.stream_of(m.channel).name))
            for m in messages
        ]
        self._sent.append((records, started))
        self._flush()

    def _follows(self, deltas: list[DeltaRecord]) -> bool:
        """Queue ``deltas`` for the direct way if each is this node's own and its entries directly
        follow the marks and what is queued already (all or none)."""
        own = self.replica.id
        if len(self._direct) + len(deltas) > DIRECT_MAX:
            return False
        ahead = dict(self._ahead)
        for record in deltas:
            if record.origin != own or record.also or not record.seqs:
                return False
            for channel, seq in record.seqs.items():
                key = (channel, own)
                if seq != max(self.marks.get(channel, {}).get(own, 0), ahead.get(key, 0)) + 1:
                    return False
                ahead[key] = seq
        self._ahead = ahead
        self._direct += deltas
        return True

    def _raise_handed(self) -> None:
        self._bus_marks = None
        self._raise(self._advance([], {}, complete=False))

    def _in_stream(self, record: DeltaRecord) -> bool:
        for channel in record.seqs:
            mark = self.marks.get(channel, {}).get(record.origin, 0)
            done = self._handed.get((channel, record.origin), ())
            if any(s > mark and s not in done for s in record.all_seqs(channel)):
                return False
        return True

    def arriving(self, channel: str, delta: DeltaRecord) -> None:
        """``delta`` came from the stream on ``channel``'s subject and is about to be applied; until
        :meth:`arrived`, a commit of that very delta marks its entries in ``channel`` as in the
        stream. Only the commit tells: a message may claim entries that are not its publisher's to
        claim (a forged origin, another node's next sequence number), and taking the claim for the
        entries would leave the genuine ones unpublished."""
        self._arriving.setdefault(delta.uid, []).append((channel, delta))

    def arrived(self, channel: str, delta: DeltaRecord) -> None:
        """``delta`` (given to :meth:`arriving`) was applied, refused or left for redelivery."""
        held = self._arriving.get(delta.uid, [])
        held[:] = [(c, d) for c, d in held if d is not delta or c != channel]
        if not held:
            self._arriving.pop(delta.uid, None)

    def _took_arrivals(self, deltas: list[DeltaRecord]) -> None:
        for record in deltas:
            for channel, delta in self._arriving.get(record.uid, ()):
                if (
                    channel in record.seqs
                    and delta.origin == record.origin
                    and delta.all_seqs(channel) == record.all_seqs(channel)
                    and delta.update == record.update
                    and delta.signature == record.signature
                ):
                    self.handed(channel, record.origin, record.all_seqs(channel))

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
        if self._sent:  # published from their commits: their PubAcks raise the marks
            total += await self._acknowledge_sent()
        if not self._fresh:
            if self._direct:  # own entries that follow the marks: published without a log read
                return await self._publish_direct(publish)
            # only entries from the bus were committed: nothing to read or publish
            self._raise(self._advance([], {}, complete=False))
            return total
        self._direct.clear()  # the log holds them: the page publishes them
        self._ahead.clear()
        while True:
            self._fresh = False  # a commit from here on sets it again
            try:
                store = self.replica.store
                channels = store.channels()
                # the vectors before the page: every entry they claim is in the log the page reads
                held = {c: store.version_vector(c) for c in channels}
                page = store.deltas_since(channels, self.marks, self.page)
                self.log_reads += 1
                todo = self._unpublished(page, held)
                if todo:
                    await self._publish(todo, publish)
                    total += sum(len(p.entries) for p in todo)
            except BaseException:
                self._fresh = True  # the marks stayed behind: the next attempt reads the log again
                raise
            self._raise(self._advance(page, held, complete=len(page) < self.page))
            if self._missed:  # a page older than the vectors: again shortly, not at the next commit
                self._missed = False
                self._fresh = True
                asyncio.get_running_loop().call_later(MISSED_RETRY_S, self.wake.set)
                return total
            if not todo or len(page) < self.page:  # a commit since sets _fresh again
                return total
            self._fresh = True  # a full page: the next may hold more

    async def _publish_direct(self, publish: PublishOne) -> int:
        records, self._direct = self._direct, []
        own = self.replica.id
        store = self.replica.store
        for record in records:
            for channel, seq in record.seqs.items():
                if seq > store.version_vector(channel).get(own, 0):  # not claimed yet: the log, later
                    self._fresh = True
                    self._ahead.clear()
                    self._direct.clear()
                    asyncio.get_running_loop().call_later(MISSED_RETRY_S, self.wake.set)
                    return 0
        todo = [_Pending(record, list(record.seqs.items())) for record in records]
        try:
            await self._publish(todo, publish)
        except BaseException:
            self._fresh = True  # the marks stayed behind: the log path publishes it all again
            self._direct.clear()
            self._ahead.clear()
            raise
        self._published_direct(records)
        return sum(len(item.entries) for item in todo)

    async def _acknowledge_sent(self) -> int:
        """Await the PubAcks of what commits published, oldest first; raises on the first failure
        (what is not acknowledged goes again by the log path)."""
        total = 0
        while self._sent:
            records, started = self._sent[0]
            acks = (_within(future, self._ack_timeout) for _, future in started)
            results = await asyncio.gather(*acks, return_exceptions=True)
            self._sent.pop(0)
            failed = None
            for (message, _), result in zip(started, results, strict=True):
                if isinstance(result, BaseException):
                    failed = failed or result
                else:
                    self._acknowledged(message, result)
            if failed is not None:
                for _, later in self._sent:
                    for _, future in later:
                        _drop(future)
                self._sent.clear()
                self._to_log()
                raise failed
            self._published_direct(records)
            total += len(started)
        return total

    def _published_direct(self, records: list[DeltaRecord]) -> None:
        """``records``, published the direct way, are acknowledged: the marks rise past them."""
        own = self.replica.id
        self.direct_published += len(records)
        self._raise(self._advance([], {}, complete=False))
        for record in records:
            for channel, seq in record.seqs.items():
                if self._ahead.get((channel, own)) == seq:  # nothing queued after it
                    del self._ahead[(channel, own)]

    def _raise(self, raised: dict[str, VersionVector]) -> None:
        """Raise the marks in memory now, and in the store with the next write."""
        if not raised:
            return
        for channel, vector in raised.items():
            self.marks.setdefault(channel, {}).update(vector)
            self._unwritten.setdefault(channel, {}).update(vector)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_later(), name="crdtmem-bus-marks")

    async def _write_later(self) -> None:
        await asyncio.sleep(self.mark_interval)
        try:
            await self._write_marks()
        except CrdtmemError as exc:  # kept for the next write: the marks only lag behind
            log.warning("writing the outbox marks failed, kept for the next write: %s", exc)

    async def _write_marks(self) -> None:
        marks, self._unwritten = self._unwritten, {}
        if not marks:
            return
        # shielded: a cancelled writer leaves the write to finish, and settle() waits for it
        self._writing = asyncio.ensure_future(
            asyncio.to_thread(self.replica.store.raise_outbox_marks, SINK, marks)
        )
        try:
            await asyncio.shield(self._writing)
        except CrdtmemError:
            for channel, vector in marks.items():  # again with the next write (marks only rise)
                mine = self._unwritten.setdefault(channel, {})
                for origin, seq in vector.items():
                    mine[origin] = max(seq, mine.get(origin, 0))
            raise
        self.mark_writes += 1

    def _unpublished(self, page: list[DeltaRecord], held: dict[str, VersionVector]) -> list[_Pending]:
        out: list[_Pending] = []
        own = self.replica.id
        for record in page:
            pending = _Pending(record)
            for channel in record.seqs:
                if record.origin == own and record.seqs[channel] > held.get(channel, {}).get(own, 0):
                    # committed, but the store's vectors do not claim it yet (the commit thread
                    # publishes them just after): this node's own consumer, reading it back, would
                    # take it for a forgery. Its commit's notification wakes the publisher again.
                    continue
                seqs = record.all_seqs(channel)
                done = self._handed.get((channel, record.origin), set())
                if not all(s in done for s in seqs):
                    pending.entries.append((channel, record.seqs[channel]))
            if pending.entries:
                out.append(pending)
        return out

    def _encode(self, records: list[DeltaRecord], channels: list[str]) -> bytes:
        # a stub goes with its memory's erase marker, without which receivers refuse it
        sent = with_markers(self.replica.store, records, channels)
        return wire.encode(wire.Payload(self.replica.id, sent, {}, self.replica.keys_for(sent)))

    def _messages(self, todo: list[_Pending]) -> list[_Message]:
        """The messages that carry ``todo``: eager, one per entry (the same bytes on each of its
        channels); lazy, per channel and origin in log order, batches of consecutive entries."""
        out: list[_Message] = []
        if self.delivery == "eager":
            for item in todo:
                record = item.record
                data = self._encode([record], list(record.seqs))
                for channel, seq in item.entries:
                    seqs = set(record.all_seqs(channel))
                    msg_id = message_id(record.origin, channel, seq, data)
                    out.append(_Message(channel, record.origin, data, msg_id, seqs))
            return out
        runs: dict[Key, list[DeltaRecord]] = {}
        for item in todo:
            for channel, _ in item.entries:
                runs.setdefault((channel, item.record.origin), []).append(item.record)
        for (channel, origin), records in runs.items():
            while records:
                batch = within_bytes(records[: self.batch_max], self.max_bytes)
                records = records[len(batch) :]
                seqs = {s for record in batch for s in record.all_seqs(channel)}
                merged = coalesce(batch, self.replica.id, self.replica.signer)
                data = self._encode(merged, [channel])
                msg_id = batch_id(origin, channel, sorted(seqs), data)
                out.append(_Message(channel, origin, data, msg_id, seqs))
        return out

    async def _publish(self, todo: list[_Pending], publish: PublishOne) -> None:
        layout = self.layout

        async def one(message: _Message) -> None:
            channel = message.channel
            duplicate = await publish(
                layout.subject(channel), message.data, message.msg_id, layout.stream_of(channel).name
            )
            self._acknowledged(message, duplicate)

        messages = self._messages(todo)
        if len(messages) == 1:  # one message (a write as it commits): no task for it
            await one(messages[0])
            return
        results = await asyncio.gather(*(one(m) for m in messages), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]

    def _acknowledged(self, message: _Message, duplicate: bool) -> None:
        self._handed.setdefault((message.channel, message.origin), set()).update(message.seqs)
        self.messages += 1
        if duplicate:
            self.duplicates += 1
            self.metrics.inc("crdtmem_bus_publish_duplicates_total")
        else:
            entries = len(message.seqs) if self.delivery == "lazy" else 1
            self.published += entries
            self.metrics.inc("crdtmem_bus_published_total", entries)

    def _advance(
        self, page: list[DeltaRecord], held: dict[str, VersionVector], *, complete: bool
    ) -> dict[str, VersionVector]:
        """New marks after a page: a mark passes an entry handed to the bus, or an entry the log
        held when the page was read that the page skipped because the log holds it as decided
        against (no delta to send), up to the highest entry the page returned (or every held
        entry, when the page was not full).

        An entry the vectors claim but the page did not return is passed only once the log shows
        it decided: a page read on a snapshot of the file older than the vectors (a read left
        open on the store's reader connection holds one) misses entries committed since, and
        those must wait for the next page, never be passed unpublished."""
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
            decided: set[int] | None = None  # read once, if an entry was skipped
            while True:
                if mark + 1 in done:
                    mark += 1
                    continue
                if mark + 1 > upto or mark + 1 in seen:
                    break
                if decided is None:
                    decided = self.replica.store.decided_seqs(channel, origin, mark, upto)
                if mark + 1 not in decided:  # the page missed it: read the log again soon
                    self._missed = True
                    break
                mark += 1
            if mark > start:
                raised.setdefault(channel, {})[origin] = mark
                done.difference_update(range(start + 1, mark + 1))
            if not done:
                self._handed.pop((channel, origin), None)
        return raised


async def _within(future: asyncio.Future[bool], timeout: float) -> bool:
    """``future``'s outcome, or TimeoutError after ``timeout`` s (not ``wait_for``: on Python 3.11
    it swallows a cancellation that arrives as the future completes)."""
    async with asyncio.timeout(timeout):
        return await future


def _nothing() -> None:
    pass


def _drop(future: asyncio.Future[bool]) -> None:
    """Give up on a publish's outcome (its failure, if it failed, is not reported again)."""
    if future.done():
        if not future.cancelled():
            future.exception()
    else:
        future.cancel()
