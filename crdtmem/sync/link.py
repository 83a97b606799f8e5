"""One replication link over a WebSocket. Both ends run the same :class:`Link`.

A link pushes this replica's log to the peer and applies what the peer pushes. The durable log is
the queue: the sender keeps the peer's version vectors (``sent``: what went out; ``acked``: what the
peer confirmed) and exports ``deltas_since(sent)`` page by page, so nothing is ever buffered without
bound and a lost frame is simply re-exported.

- eager: every commit of this replica is pushed at once. When the committed deltas are exactly
  what the peer misses next (contiguous from ``sent`` in every channel, the log read to its end
  since the last rewind) and the sender is idle (waiting for a wake, no pause, room in the window),
  the commit listener itself builds the frame and writes it to the socket before it returns
  (:func:`crdtmem.eager.start_now`; a drain goes on in a task that the sender waits for), so no
  turn of the loop lies between the commit and the socket. Otherwise it hands the deltas to the
  sender, woken for them: it sends them as they are at the loop's next turn when they are still
  what the peer misses next, or else (a gap, a race with a page read from the log, too many, a
  listener's send that failed) reads the log as always. Both build frames the same way, and
  ``sent`` only passes what went out;
- lazy: the sender wakes every ``interval`` and sends everything new in as few frames as fit;
- flow control: at most ``window`` frames in flight; a peer that has not acknowledged for
  ``slow_after`` seconds is told ``mode: pull`` and nothing more is pushed until it pulls (HTTP) and
  sends ``resume`` with its new vectors. The server end of a link cannot pull from its client: told
  to pull, it answers ``resume`` with its own vectors once it has applied every frame before (frames
  are handled in order). A ``mode`` frame without a ``resume`` after ``ack_timeout`` is sent again,
  since either may be lost on the way.

Inbound frames are untrusted: each is validated, size-limited, authorized against the channels the
peer may write, and a bad one is answered with an ``error`` frame and counted; the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiohttp
from aiohttp import web

from ..access import Principal
from ..eager import start_now
from ..engine import payload as wire
from ..engine.coalesce import coalesce
from ..engine.erasure import with_markers
from ..engine.inbound import ApplyResult
from ..engine.replica import Replica
from ..errors import CrdtmemError, PayloadError
from ..metrics import Metrics
from ..store.base import DeltaRecord, VersionVector, within_bytes
from .protocol import Frame, FrameError, decode_frame, encode_frame
from .settings import LinkSettings, LinkStatus, Mode

AnyWebSocket = web.WebSocketResponse | aiohttp.ClientWebSocketResponse
Vectors = dict[str, VersionVector]

log = logging.getLogger(__name__)


class Link:
    """A replication link. ``await link.run()`` until the socket closes."""

    def __init__(
        self,
        replica: Replica,
        ws: AnyWebSocket,
        *,
        peer_id: str,
        push_channels: list[str],
        accept_channels: list[str],
        peer_vectors: Vectors,
        settings: LinkSettings,
        metrics: Metrics,
        on_pull_requested: Callable[[], None] | None = None,
        sender: Principal | None = None,
        admit: Callable[[], None] | None = None,
        meter: Callable[[Coroutine[Any, Any, ApplyResult]], Awaitable[ApplyResult]] | None = None,
        admit_volume: Callable[[int, int], None] | None = None,
        version: int = 1,
    ):
        self.replica = replica
        self.ws = ws
        self.peer_id = peer_id
        self.push_channels = push_channels
        self.accept_channels = set(accept_channels)
        self.settings = settings
        self.mode: Mode = settings.mode
        self.metrics = metrics
        self._acked: Vectors = {c: dict(peer_vectors.get(c, {})) for c in push_channels}
        self._sent: Vectors = {c: dict(v) for c, v in self._acked.items()}
        self._in_flight: dict[int, float] = {}
        self._next_frame = 0
        self._wake = asyncio.Event()
        self._acks = asyncio.Event()
        self._push_set = set(push_channels)
        self._handed: list[DeltaRecord] | None = None
        """Deltas committed since the sender last read the log (eager mode); None: not collecting."""
        self._drained = False
        """The last log read reached the end of the log for this peer and nothing has been rewound
        since: then every delta the peer misses was committed after that read, i.e. handed."""
        self._held: dict[str, DeltaRecord] = {}
        """Deltas sent while past a gap in ``_sent`` (so not marked by it), by uid: left out of later
        log reads until a rewind, or a page would resend them for as long as the gap stays open."""
        self._on_pull_requested = on_pull_requested
        self._sender = sender
        """The peer's rights here: which origins it may introduce, which memories it may write
        (server side: its token's; client side: its entry in this node's tokens table). None: the
        node runs open and the peer may do anything."""
        self.version = version
        """The payload version this link sends (the highest both ends read, from the hellos)."""
        self._admit = admit
        self._admit_volume = admit_volume
        """Called before each inbound deltas frame; raises (e.g. a rate limit) to refuse it."""
        self._meter = meter
        """Runs the work of each inbound deltas frame, e.g. charged to the peer's share of the event
        loop (:mod:`crdtmem.server.loopshare`); None: run as is."""
        self._told_to_pull: tuple[float, str] | None = None
        """When the peer was last sent ``mode: pull``, and why; None when not in pull mode."""
        self._paused_until = 0.0
        """The peer refused a frame with ``retry_after``: send nothing before this monotonic time."""
        self.status = LinkStatus(peer_id, self.mode, push_channels, sorted(accept_channels), 0, 0)
        self._unsubscribe: Callable[[], None] | None = None
        self._busy = False
        """The sender is between its wake and the end of its round (it may be awaiting)."""
        self._direct: asyncio.Future[None] | None = None
        """The send of the last frame a commit listener built (a task while it waits to drain)."""

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        self._unsubscribe = self.replica.on_commit(self._on_commit)
        sender = asyncio.create_task(self._send_loop(), name=f"crdtmem-link-send-{self.peer_id}")
        try:
            await self._receive_loop()
        finally:
            sender.cancel()
            # gather, not a suppress(CancelledError) around the await: that would also swallow a
            # cancellation of *this* task (PeerClient.stop) arriving while the sender winds down
            await asyncio.gather(sender, return_exceptions=True)
            if self._direct is not None and not self._direct.done():
                self._direct.cancel()
                await asyncio.gather(self._direct, return_exceptions=True)
            if self._unsubscribe is not None:
                self._unsubscribe()

    def _on_commit(self, deltas: list[DeltaRecord]) -> None:
        if self.mode == "eager":
            if self._handed is not None:
                if len(self._handed) + len(deltas) > self.settings.page:
                    self._handed = None  # more than a frame: the log is the better source
                else:
                    self._handed.extend(deltas)
            # a commit of nothing but what the peer holds (it just sent it) has nothing to push: the
            # sender is not woken for it, so the commit's events are not kept waiting behind it
            if deltas and not any(self._peer_misses(d) for d in deltas):
                return
            if not (deltas and self._idle() and self._send_from_commit()):
                self._wake.set()

    def _idle(self) -> bool:
        """Whether this commit's frame may go out from the listener: the sender waits for a wake
        (it is not between reading and sending, where this listener may run while it awaits), no
        frame sent from a listener is still on its way, the peer has not asked for a pause, the
        window has room, the log was read to its end since the last rewind, no frame is overdue
        (the sender resends those first) and the log is not folded past what the peer holds."""
        now = time.monotonic()
        return (
            not self._busy
            and (self._direct is None or self._direct.done())
            and self._drained
            and self._handed is not None
            and not self.ws.closed
            and self._paused_until <= now
            and len(self._in_flight) < self.settings.window
            and not (self._in_flight and now - min(self._in_flight.values()) > self.settings.ack_timeout)
            and not self.replica.behind(self.push_channels, self._sent)
        )

    def _send_from_commit(self) -> bool:
        """Send the handed deltas now, from the commit listener, if they are exactly what the peer
        misses next: the frame is written to the socket before the listener returns (what suspends,
        a drain, goes on in a task). False: the sender must read the log (and is woken for it)."""
        deltas = self._next_from_commits()
        if not deltas:
            return False
        try:
            mine = {c: self.replica.store.version_vector(c) for c in self.push_channels}
            frame, outgoing = self._frame(deltas, mine)
        except Exception:  # logged; the sender reads them from the log (and fails there as it would)
            log.exception(
                "link %s: a commit's frame could not be built; the sender reads the log", self.peer_id
            )
            self._drained = False
            return False
        self._direct = start_now(self._send_direct(frame, deltas, mine, outgoing))
        return True

    async def _send_direct(
        self, frame: bytes, deltas: list[DeltaRecord], mine: Vectors, outgoing: int
    ) -> None:
        """The send of a frame built by a commit listener, as the sender's: a frame that did not go
        out is not marked sent, and the sender reads what it carried from the log."""
        try:
            sent = await self._send(frame)
        except Exception:  # the listener's caller must not see it: logged, the sender takes over
            log.exception("link %s: sending a commit's frame failed; the sender reads the log", self.peer_id)
            sent = False
        if sent:
            self._record_sent(deltas, mine, outgoing, "listener")
        else:
            # handed deltas committed later may continue from what did go out in another channel:
            # the log must be read first, or these would wait for the next gap
            self._drained = False
            self._wake.set()

    def _peer_misses(self, delta: DeltaRecord) -> bool:
        """Whether ``delta`` is beyond what was sent to (or is held by) the peer in a pushed channel."""
        for channel, seq in delta.seqs.items():
            if channel in self._push_set and seq > self._sent.get(channel, {}).get(delta.origin, 0):
                return True
        return False

    def lag(self) -> int:
        """Deltas this replica holds for the pushed channels that the peer has not acknowledged."""
        behind = 0
        for channel in self.push_channels:
            mine = self.replica.store.version_vector(channel)
            theirs = self._acked.get(channel, {})
            behind += sum(max(0, seq - theirs.get(origin, 0)) for origin, seq in mine.items())
        return behind

    def snapshot(self) -> LinkStatus:
        self.status.mode = self.mode
        self.status.in_flight = len(self._in_flight)
        self.status.lag = self.lag()
        return self.status

    # -- sending ------------------------------------------------------------------------------

    async def _send_loop(self) -> None:
        self._wake.set()  # catch the peer up on whatever it missed since its hello
        while not self.ws.closed:
            if self.mode == "lazy":
                await asyncio.sleep(self.settings.interval)
            else:
                # the periodic wake also re-sends what a refused or lost frame carried. Hazard:
                # not wait_for, which on Python 3.11 swallows a cancellation that arrives as the
                # event is set, and the loop would go on after the link was told to stop
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
            self._wake.clear()
            if self.mode == "pull":
                await self._repeat_pull_request()
                continue
            self._busy = True  # from here a commit listener only collects and wakes
            try:
                if self._direct is not None and not self._direct.done():
                    await asyncio.wait({self._direct})  # a listener's frame still on its way
                pause = self._paused_until - time.monotonic()
                if pause > 0:  # the peer asked us to slow down; the log keeps everything meanwhile
                    await asyncio.sleep(pause)
                self._rewind_lost_frames()
                await self._send_available()
            finally:
                self._busy = False

    def _rewind_lost_frames(self) -> None:
        """A frame (or its ack) may be lost on the way: after ``ack_timeout`` resend from ``acked``."""
        if self._in_flight and time.monotonic() - min(self._in_flight.values()) > self.settings.ack_timeout:
            self.metrics.inc("crdtmem_frames_resent_total", peer=self.peer_id)
            self._in_flight.clear()
            self._sent = {c: dict(v) for c, v in self._acked.items()}
            self._held.clear()
            self._drained = False

    async def _send_available(self) -> None:
        if self.replica.behind(self.push_channels, self._sent):
            # the log is folded past what the peer holds: it catches up from states, by pull
            await self._switch_to_pull("behind the horizon of the log: pull to catch up from states")
            return
        while not self.ws.closed and self.mode != "pull":
            if len(self._in_flight) >= self.settings.window and not await self._wait_for_room():
                return
            mine = {c: self.replica.store.version_vector(c) for c in self.push_channels}
            deltas = self._next_from_commits()
            source = "commit"
            if deltas is None:
                self._handed = [] if self.mode == "eager" else None  # collect what commits after this read
                wanted = self.settings.page
                read = self.replica.store.deltas_since(
                    self.push_channels, self._sent, wanted + len(self._held)
                )
                page = [d for d in read if d.uid not in self._held][:wanted]
                deltas = within_bytes(page, self.settings.max_frame_bytes // 2)
                source = "log"
                # the end of the log, with nothing held beyond a gap (those are sent again later)
                self._drained = (
                    len(read) < wanted + len(self._held)
                    and len(deltas) == len(page)
                    and all(
                        seq <= mine.get(channel, {}).get(d.origin, 0)
                        for d in deltas
                        for channel, seq in d.seqs.items()
                    )
                )
            if not deltas:
                return
            frame, outgoing = self._frame(deltas, mine)
            if not await self._send(frame):
                return
            self._record_sent(deltas, mine, outgoing, source)
            if len(deltas) < self.settings.page:
                return

    def _frame(self, deltas: list[DeltaRecord], mine: Vectors) -> tuple[bytes, int]:
        """The deltas frame for ``deltas`` (with ``mine``, this replica's vectors, for the peer's
        acknowledgement), numbered and counted in flight; and how many deltas it carries."""
        outgoing = coalesce(deltas, self.replica.id, self.replica.signer) if self.mode == "lazy" else deltas
        outgoing = with_markers(self.replica.store, outgoing, self.push_channels)  # stubs need them
        keys = self.replica.keys_for(outgoing) if self.version >= 2 else {}
        body = wire.encode(wire.Payload(self.replica.id, outgoing, mine, keys), self.version)
        n = self._next_frame
        self._next_frame += 1
        self._in_flight[n] = time.monotonic()
        return encode_frame("deltas", n=n, payload=body), len(outgoing)

    def _record_sent(self, deltas: list[DeltaRecord], mine: Vectors, outgoing: int, source: str) -> None:
        self._advance_sent(deltas, mine)
        self.status.frames_sent += 1
        self.status.deltas_sent += outgoing
        self.metrics.inc("crdtmem_deltas_sent_total", outgoing, peer=self.peer_id)
        self.metrics.inc("crdtmem_frames_sent_total", peer=self.peer_id, source=source)

    def _next_from_commits(self) -> list[DeltaRecord] | None:
        """The handed deltas as the log would page them to this peer, if they are exactly what it
        misses; None when the log must be read (nothing handed, the log not read to its end since the
        last rewind, a gap, a coalesced delta)."""
        handed, self._handed = self._handed, None
        if not handed or not self._drained:
            return None
        out: list[DeltaRecord] = []
        expected: dict[tuple[str, str], int] = {}
        for delta in handed:
            if delta.also:
                return None
            seqs: dict[str, int] = {}
            for channel, seq in delta.seqs.items():
                if channel not in self._push_set:
                    continue
                key = (channel, delta.origin)
                following = expected.get(key) or self._sent.get(channel, {}).get(delta.origin, 0) + 1
                if seq < following:
                    continue  # already sent in this channel (it was also in a page read from the log)
                if seq != following:
                    return None
                expected[key] = seq + 1
                seqs[channel] = seq
            if seqs:
                same = seqs == delta.seqs
                out.append(delta if same else dataclasses.replace(delta, seqs=seqs, channels=tuple(seqs)))
        self._handed = []
        return out

    def _advance_sent(self, deltas: list[DeltaRecord], mine: Vectors) -> None:
        """Mark what went out: per channel and origin, only over a run with no gaps from what was
        marked before, and never past this replica's own contiguous vector. A delta not in this
        batch (held beyond a gap here, or logged out of order) is sent again later, so the peer can
        never skip one."""
        went: dict[tuple[str, str], set[int]] = {}
        for delta in deltas:
            for channel in delta.seqs:
                went.setdefault((channel, delta.origin), set()).update(delta.all_seqs(channel))
        for (channel, origin), seqs in went.items():
            vector = self._sent.setdefault(channel, {})
            ceiling = mine.get(channel, {}).get(origin, 0)
            mark = vector.get(origin, 0)
            while mark + 1 in seqs and mark < ceiling:
                mark += 1
            vector[origin] = mark
        for delta in [*deltas, *self._held.values()]:
            marked = all(
                seq <= self._sent.get(channel, {}).get(delta.origin, 0)
                for channel in delta.seqs
                for seq in delta.all_seqs(channel)
            )
            if marked:
                self._held.pop(delta.uid, None)
            else:
                self._held[delta.uid] = delta
        if len(self._held) > 4 * self.settings.page:  # a long-open gap: bound the memory, resend later
            self._held.clear()

    async def _wait_for_room(self) -> bool:
        """Wait for acknowledgements; after ``slow_after`` seconds move the peer to pull mode."""
        deadline = min(self._in_flight.values()) + self.settings.slow_after
        while len(self._in_flight) >= self.settings.window:
            self._acks.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await self._switch_to_pull("peer did not acknowledge in time")
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):  # not wait_for: see _send_loop
                    await self._acks.wait()
        return True

    async def _switch_to_pull(self, reason: str) -> None:
        self.mode = "pull"
        self._in_flight.clear()
        self._sent = {c: dict(v) for c, v in self._acked.items()}
        self._held.clear()
        self._drained = False
        self.metrics.inc("crdtmem_peers_moved_to_pull_total", peer=self.peer_id)
        where = {"event": "link_pull", "peer_id": self.peer_id, "reason": reason}
        log.info("moved peer %s to pull: %s", self.peer_id, reason, extra=where)
        self._told_to_pull = (time.monotonic(), reason)
        await self._send(encode_frame("mode", mode="pull", reason=reason))

    async def _repeat_pull_request(self) -> None:
        """Hazard: a lost ``mode`` frame, or a lost ``resume``, would leave this link pushing nothing
        for the rest of its life: no ``resume`` after ``ack_timeout``, the peer is told again."""
        if self._told_to_pull is None:
            return
        told_at, reason = self._told_to_pull
        if time.monotonic() - told_at > self.settings.ack_timeout:
            self._told_to_pull = (time.monotonic(), reason)
            await self._send(encode_frame("mode", mode="pull", reason=reason))

    # -- receiving ----------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        async for message in self.ws:
            if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING):
                return
            if message.type == aiohttp.WSMsgType.ERROR:
                return
            if message.type not in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):
                continue
            try:
                frame = decode_frame(message.data)
                await self._handle(frame)
            except (FrameError, PayloadError, CrdtmemError) as exc:
                await self._refuse(exc)

    async def _refuse(self, exc: Exception, n: int | None = None) -> None:
        code = type(exc).__name__
        self.status.errors += 1
        self.metrics.inc("crdtmem_frames_rejected_total", reason=code)
        body: dict[str, Any] = {"code": code, "message": str(exc)}
        if n is not None:
            body["n"] = n
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, (int, float)):
            body["retry_after"] = round(float(retry_after), 3)
        await self._send(encode_frame("error", **body))

    async def _handle(self, frame: Frame) -> None:
        body = frame.body
        if frame.type == "deltas":
            await self._receive_deltas(body["n"], body["payload"])
        elif frame.type == "ack":
            sent_at = self._in_flight.pop(body["n"], None)
            if sent_at is not None:
                self.metrics.observe("crdtmem_push_seconds", time.monotonic() - sent_at, peer=self.peer_id)
            vectors = body.get("vectors", {})  # the frame's check lets an ack leave them out
            _merge_max(self._acked, vectors, self.push_channels)
            _merge_max(self._sent, vectors, self.push_channels)
            self._acks.set()
        elif frame.type == "error":
            # our frame was refused: re-export from what the peer confirmed
            self._in_flight.pop(body.get("n", -1), None)
            self._sent = {c: dict(v) for c, v in self._acked.items()}
            self._held.clear()
            self._drained = False
            self.metrics.inc("crdtmem_frames_refused_by_peer_total", reason=str(body["code"]))
            if "retry_after" in body:
                self._paused_until = time.monotonic() + body["retry_after"]
            self._acks.set()
        elif frame.type == "mode":
            # the peer stops pushing to us until we pull and resume; our own push goes on
            self.metrics.inc("crdtmem_told_to_pull_total", peer=self.peer_id)
            log.debug("peer %s stopped pushing until this end pulls: %s", self.peer_id, body.get("reason"))
            if self._on_pull_requested:
                self._on_pull_requested()
            else:
                # the server end has no way to pull from its client. Every deltas frame sent before
                # this one is applied by now (frames are handled in order): this end is caught up as
                # far as it can be, and the peer may push again from what it holds
                await self.send_resume(self.replica.version_vectors(sorted(self.accept_channels)))
        elif frame.type == "resume":
            if self.mode == "pull":
                where = {"event": "link_resume", "peer_id": self.peer_id}
                log.info("peer %s resumed: pushing again", self.peer_id, extra=where)
            vectors = body.get("vectors", {})  # the frame's check lets a resume leave them out
            self._acked = {c: dict(vectors.get(c, {})) for c in self.push_channels}
            self._sent = {c: dict(v) for c, v in self._acked.items()}
            self._held.clear()
            self._drained = False
            self._in_flight.clear()
            self.mode = self.settings.mode
            self._told_to_pull = None
            self._wake.set()
        else:
            raise FrameError(f"unexpected {frame.type} frame on an established link")

    async def _receive_deltas(self, n: int, data: bytes) -> None:
        try:
            if self._admit is not None:
                self._admit()
            taking = self._take(data)
            result = await (self._meter(taking) if self._meter is not None else taking)
        except CrdtmemError as exc:
            await self._refuse(exc, n)
            return
        # the commit's events go to their subscribers before the acknowledgement goes out (the
        # peer's window has room for several frames; nothing waits on this one)
        await asyncio.sleep(0)
        self.status.frames_received += 1
        self.status.deltas_received += result.applied
        self.metrics.inc("crdtmem_deltas_received_total", result.applied, peer=self.peer_id)
        vectors = self.replica.version_vectors(sorted(self.accept_channels))
        if result.unauthenticated:
            self.metrics.inc(
                "crdtmem_deltas_unauthenticated_total", result.unauthenticated, peer=self.peer_id
            )
        if result.rejected:  # applied around them (see crdtmem.engine.remote); the peer learns how many
            self.metrics.inc("crdtmem_deltas_rejected_total", result.rejected, peer=self.peer_id)
            await self._send(encode_frame("ack", n=n, vectors=vectors, rejected=result.rejected))
            return
        await self._send(encode_frame("ack", n=n, vectors=vectors))

    async def _take(self, data: bytes) -> ApplyResult:
        """Decode, check and apply one inbound deltas frame (its work metered, on a server, as its
        principal's: see ``meter``)."""
        if self._admit_volume is not None:
            self._admit_volume(0, len(data))
        decoded = wire.decode(data, max_bytes=self.settings.max_frame_bytes)
        if self._admit_volume is not None:
            self._admit_volume(len(decoded.deltas), 0)
        received = wire.restrict(decoded, self.accept_channels.__contains__)
        forbidden = sorted({c for d in received.deltas if not d.seqs for c in _claimed(d)})
        if forbidden:
            denied = ", ".join(forbidden)
            raise AccessDeniedFrame(f"peer {self.peer_id} may not write to {denied}; frame refused")
        # the peer holds everything its vectors name: never echo those deltas back to it (marked
        # before they are applied, so that their commit does not wake the sender for nothing)
        _merge_max(self._acked, received.vectors, self.push_channels)
        _merge_max(self._sent, received.vectors, self.push_channels)
        started = time.perf_counter()  # observed only if the apply finished without an exception
        result = await self.replica.apply_payload(received, sender=self._sender, isolate=True)
        self.metrics.observe("crdtmem_apply_seconds", time.perf_counter() - started, source="link")
        return result

    async def send_resume(self, vectors: Vectors) -> None:
        """Tell the peer this side caught up by pulling; it may push again from ``vectors``."""
        await self._send(encode_frame("resume", vectors=vectors))

    async def _send(self, frame: bytes) -> bool:
        """Send one frame; False if the socket is closing (the peer went away or this node stops).
        Hazard: a peer may close between any two frames, so every send goes through here; nothing
        is lost by a frame that did not go out: what the peer did not acknowledge is re-exported
        from the log on the next link, and an ack that did not go out makes the peer resend deltas
        that are already durable here (duplicates)."""
        if self.ws.closed:
            return False
        try:
            await self.ws.send_bytes(frame)
        except ConnectionError:
            return False
        return True


def _claimed(delta: DeltaRecord) -> dict[str, int]:
    return delta.signature.seqs if delta.signature is not None else delta.seqs


class AccessDeniedFrame(PayloadError):
    """A pushed frame carried deltas for channels the peer may not write."""


def _merge_max(target: Vectors, update: Vectors, channels: list[str]) -> None:
    for channel in channels:
        vector = target.setdefault(channel, {})
        for origin, seq in update.get(channel, {}).items():
            if seq > vector.get(origin, 0):
                vector[origin] = seq
