"""``GET /v1/events``: the MemoryEvent feed as Server-Sent Events, or as a WebSocket.

    GET /v1/events?channel=user:u1:memories&channel=tenant:acme:shared
        -> text/event-stream:  id: {event_id}\\nevent: {event_type}\\ndata: {MemoryEvent JSON}\\n\\n
           with ": heartbeat" comments when idle for HEARTBEAT_SECONDS
        -> or, on a WebSocket upgrade, one MemoryEvent JSON text message per event

Channels must be readable by the caller (403 otherwise, 400 for a name that does not parse); with no
channel the feed carries every memory the caller may read.

Resuming: ``event_id`` is ``"{replica_id}:{version}"``, the replica's local version counter. A client
that reconnects with ``Last-Event-ID`` (header, or ``?last_event_id=`` where it cannot set headers) first
gets the current state of every memory in its channels changed since that version, in version order
(``delete`` if deleted, else ``update``), and a ``forgotten`` event for each memory on its channels
forgotten since then, then the live feed. An id of another replica, or one beyond
this replica's newest version, cannot be compared: the stream starts with a ``reset`` event (SSE
``event: reset``; on a WebSocket a JSON message with ``"event_type": "reset"``), which tells the
client to drop what it holds, and then replays everything, as ``create`` (like a resume from version
0). The live subscription is opened *before* the replay is read and live events at or below the last
replayed version are dropped, so nothing falls between the two and nothing comes twice. A replayed
event carries the memory's current state: intermediate states are folded, as in any state-based
catch-up, and its ``origin`` is this replica (the last writer is not recorded).

A replay is never held in memory at once: it is read ``Limits.feed_page`` memories (and at most
``REPLAY_PAGE_CHARS`` of them, but at least one) at a time (per
subscribed channel, merged in version order) and each page is written before the next is read, so
a slow reader holds back only its own stream (the socket's buffer fills, the write waits). Twenty
clients replaying a large node cost twenty pages, not twenty copies of the node.

Backpressure: each stream has a bounded queue (MAX_QUEUE events). A client that falls that far behind
gets ``event: overflow`` (SSE; data names the ``last_event_id`` to resume from) or a final JSON
message and close code 1013 (WebSocket) and is dropped; it reconnects with Last-Event-ID and loses
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from ..access import AccessDenied, Principal, may_read_memory
from ..clock import Hlc
from ..document.records import Memory
from ..engine.feed import FeedOverflow, Subscription
from ..engine.replica import Replica
from ..errors import InvalidInput
from ..events import EventType, MemoryEvent
from ..ids import parse_channels
from ..store.base import Erased
from .auth import PRINCIPAL

if TYPE_CHECKING:
    from .context import NodeContext

HEARTBEAT_SECONDS = 15.0
MAX_QUEUE = 1_000
POLL_SECONDS = 0.5
"""How soon an idle stream notices that its client left or the node is stopping."""

REPLAY_PAGE_CHARS = 1024 * 1024
"""A replay page ends early once its memories add up to this much JSON (``feed_page`` memories of
1 MiB each would be 50 MiB). Pages are read and decoded on a worker thread, and the stream yields to
the event loop after each event it writes, so what one replay holds the loop for is one event's
encoding, not a page's."""

_QUERY = ("channel", "last_event_id", "token")
_WS_OVERFLOW = 1013  # "try again later"


REPLAYS_PER_PRINCIPAL = 2
"""Replays one principal runs at once; its other streams wait their turn (live events queue for them
meanwhile). Twenty streams of one token resuming from an unknown id take two streams' share of the
event loop, not twenty."""


class _Turns:
    """At most ``most`` holders at once per key, the others waiting in order."""

    def __init__(self, most: int):
        self._most = most
        self._gates: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        gate, users = self._gates.setdefault(key, (asyncio.Semaphore(self._most), [0]))
        users[0] += 1
        try:
            async with gate:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._gates[key]


def routes(node: NodeContext) -> list[web.RouteDef]:
    turns = _Turns(REPLAYS_PER_PRINCIPAL)

    async def events(request: web.Request) -> web.StreamResponse:
        principal: Principal = request[PRINCIPAL]
        unknown = sorted(set(request.query) - set(_QUERY))
        if unknown:
            raise InvalidInput(
                f"unknown query parameter(s) {', '.join(unknown)}; expected {', '.join(_QUERY)}"
            )
        selection = _select(principal, request.query.getall("channel", []))
        after = _resume_after(request, node.replica.id)
        websocket = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS)
        transport = "ws" if websocket.can_prepare(request).ok else "sse"
        stream = _EventStream(node.replica, selection, after, node.replica.limits.feed_page)
        stream.turn = lambda: turns.turn(principal.name)
        try:
            await stream.open(_given_id(request))
            node.metrics.inc("crdtmem_event_streams_total", transport=transport)
            if transport == "ws":
                return await _serve_websocket(request, websocket, node, stream)
            return await _serve_sse(request, node, stream)
        finally:
            await stream.close()

    return [web.get("/v1/events", events)]


# -- what a stream carries ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Selection:
    """The channels a stream subscribes to (None: all) and the memories it may carry."""

    channels: tuple[str, ...] | None
    principal: Principal

    def wants(self, memory_channels: Iterable[str]) -> bool:
        if self.channels is not None:
            return not set(self.channels).isdisjoint(memory_channels)
        return may_read_memory(self.principal, memory_channels)


def _select(principal: Principal, requested: list[str]) -> _Selection:
    names = [part.strip() for value in requested for part in value.split(",") if part.strip()]
    if names:
        channels = tuple(dict.fromkeys(parse_channels(names)))
        denied = [c for c in channels if not principal.may_read(c)]
        if denied:
            raise AccessDenied(f"{principal.name} may not read {', '.join(denied)}")
        return _Selection(channels, principal)
    if not principal.read:
        raise AccessDenied(f"{principal.name} may not read any channel")
    if any("*" in pattern for pattern in principal.read):
        return _Selection(None, principal)  # patterns cannot be subscribed to: filter every event
    return _Selection(parse_channels(list(principal.read)), principal)


def _resume_after(request: web.Request, replica_id: str) -> int | None:
    """The version to resume after, or None for live events only."""
    text = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    if not text:
        return None
    origin, sep, version = text.strip().rpartition(":")
    if not sep or not origin or not (version.isascii() and version.isdigit()) or len(version) > 18:
        raise InvalidInput(f"Last-Event-ID must be an event id '{{replica_id}}:{{version}}', got {text!r}")
    return int(version) if origin == replica_id else 0


def _given_id(request: web.Request) -> str | None:
    return request.headers.get("Last-Event-ID") or request.query.get("last_event_id")


def _reset(replica_id: str, given: str | None, reason: str) -> dict[str, Any]:
    return {
        "event_type": "reset",
        "replica_id": replica_id,
        "last_event_id": given,
        "reason": f"{reason}: drop what you hold; the current state of every memory follows",
    }


def _replayed(replica_id: str, memory: Memory, after: int) -> MemoryEvent:
    kind: EventType = "delete" if memory.deleted else "create" if after == 0 else "update"
    return MemoryEvent(
        event_id=f"{replica_id}:{memory.version}",
        event_type=kind,
        timestamp=Hlc.decode(memory.updated_at).isoformat(),
        memory=memory,
        source=memory.source,
        channels=memory.channels,
        origin=replica_id,
    )


def _replayed_forgotten(replica_id: str, erased: Erased) -> MemoryEvent:
    return MemoryEvent.forgotten(
        f"{replica_id}:{erased.version}",
        Hlc.decode(erased.hlc).isoformat(),
        erased.doc_id,
        erased.channels,
        replica_id,
    )


class _EventStream:
    """Replay since a version, page by page, then live events, with no gap and no duplicate."""

    def __init__(self, replica: Replica, selection: _Selection, after: int | None, page: int):
        self.replica = replica
        self.selection = selection
        self.after = after
        self.page = page
        self.reset: dict[str, Any] | None = None
        """Why the resume point could not be used (sent as a ``reset`` event before the replay)."""
        self.last_version = 0
        self._live: Subscription | None = None
        self.turn: Callable[[], contextlib.AbstractAsyncContextManager[None]] = _any_time
        """Waited for before a replay (one principal's replays at once are bounded)."""

    async def open(self, given: str | None = None) -> None:
        feed = self.replica.feed
        subscribers = len(feed)
        # registered before the replay is read, so a change committed in between is in one of them
        self._live = self.replica.events(self.selection.channels, max_queue=MAX_QUEUE)
        assert len(feed) > subscribers
        if self.after is None:
            return
        if given is not None and given.strip().rpartition(":")[0] != self.replica.id:
            self.reset = _reset(self.replica.id, given, "the event id is of another replica")
        else:
            newest = await self.replica.list(include_deleted=True, limit=1)
            # the newest version may be an erasure's (a forgotten event's id), which no record has
            erased = self.replica.store.erased_since(self.after - 1, 1) if self.after > 0 else []
            if self.after > (newest[0].version if newest else 0) and not erased:
                # An id from the future (a replica rebuilt under the same id): resuming from it would
                # drop every live event until the versions caught up, so replay everything instead.
                self.after = 0
                self.reset = _reset(self.replica.id, given, "the event id is ahead of this replica")
        self.last_version = self.after

    async def replay(self) -> AsyncGenerator[MemoryEvent, None]:
        """The replayed events, read one page at a time (module docstring). Close it (``aclosing``)
        when not read to its end: it holds its principal's turn."""
        if self.after is None:
            return
        after = self.after
        async with self.turn(), contextlib.aclosing(self._changed_since(after)) as changes:
            async for change in changes:
                if change.version <= self.last_version or not self.selection.wants(change.channels):
                    continue  # on two subscribed channels, or not readable
                self.last_version = change.version
                if isinstance(change, Erased):
                    yield _replayed_forgotten(self.replica.id, change)
                else:
                    yield _replayed(self.replica.id, change, after)

    async def _changed_since(self, after: int) -> AsyncGenerator[Memory | Erased, None]:
        """Memories changed since ``after`` in version order, with the erasures since then: one query
        per page and channel (and of erasures), the pages merged; at most a page of each is held.
        A replay from 0 has no erasures to tell (the client holds nothing of this replica's)."""
        channels: tuple[str | None, ...] = self.selection.channels or (None,)
        cursors = dict.fromkeys(channels, after)
        pages: dict[str | None, deque[Memory]] = {c: deque() for c in channels}
        done: set[str | None] = set()
        erased: deque[Erased] = deque()
        erased_after, erased_done = after, after == 0
        while True:
            for channel in channels:
                if not pages[channel] and channel not in done:
                    page = await self.replica.list(
                        channel=channel,
                        include_deleted=True,
                        since_version=cursors[channel],
                        ascending=True,
                        limit=self.page,
                        max_chars=REPLAY_PAGE_CHARS,
                        off_loop=True,
                    )
                    pages[channel].extend(page)
                    if page:
                        cursors[channel] = page[-1].version
                    else:  # (a short page may have been cut by its size)
                        done.add(channel)
            if not erased and not erased_done:
                gone = self.replica.store.erasures_since(erased_after, self.page)
                erased.extend(e for e in gone if e.channels and e.hlc)  # older rows name no channels
                erased_after = gone[-1].version if gone else erased_after
                erased_done = len(gone) < self.page
                if gone and not erased:
                    continue  # a page of unannounceable rows: read the next one
            ready = [c for c in channels if pages[c]]  # (a channel key None: every channel)
            first = pages[min(ready, key=lambda c: pages[c][0].version)] if ready else None
            if erased and (first is None or erased[0].version < first[0].version):
                yield erased.popleft()
            elif first is not None:
                yield first.popleft()
            else:
                return

    async def next(self, timeout: float) -> MemoryEvent | None:
        """The next live event not already replayed; None if none came within ``timeout``.

        Raises StopAsyncIteration when the feed closes and FeedOverflow when the client fell behind.
        """
        deadline = time.monotonic() + timeout
        while True:
            assert self._live is not None, "open() first"
            event = await self._live.get(max(0.0, deadline - time.monotonic()))
            if event is None:
                return None
            if self.selection.channels is None and not self.selection.wants(event.channels):
                continue
            if event.version <= self.last_version:
                continue  # already in the replay
            self.last_version = event.version
            return event

    async def close(self) -> None:
        if self._live is not None:
            await self._live.aclose()


@contextlib.asynccontextmanager
async def _any_time() -> AsyncIterator[None]:
    yield


def _gone(request: web.Request, node: NodeContext) -> bool:
    """Whether the client disconnected or the node stopped serving.

    aiohttp does not cancel a handler whose client left, and node shutdown waits for open handlers,
    so a long-lived stream checks both itself while idle.
    """
    transport = request.transport
    if transport is None or transport.is_closing():
        return True
    return not node.serving


_JSON: OrderedDict[int, tuple[MemoryEvent, str]] = OrderedDict()
_JSON_MOST = 1024
_JSON_MOST_CHARS = 16 * 1024 * 1024
"""The cache keeps at most this many events and this much text (events of 1 MiB values add up)."""
_json_chars = 0


def _event_json(event: MemoryEvent) -> str:
    """An event's JSON, built once however many streams send it (fan-out to many subscribers).

    Keyed by the event object itself (its id(), with the event kept alive beside its text so the id
    cannot be reused): event ids repeat across replicas that share a replica id, objects do not.
    """
    cached = _JSON.get(id(event))
    if cached is not None and cached[0] is event:
        return cached[1]
    global _json_chars
    text = json.dumps(event.to_dict(), separators=(",", ":"))
    _JSON[id(event)] = (event, text)
    _json_chars += len(text)
    while len(_JSON) > _JSON_MOST or (_json_chars > _JSON_MOST_CHARS and len(_JSON) > 1):
        _json_chars -= len(_JSON.popitem(last=False)[1][1])
    return text


def _overflow_json(error: FeedOverflow, last_event_id: str | None) -> str:
    data: dict[str, Any] = {
        "error": "FeedOverflow",
        "message": f"{error} Reconnect with Last-Event-ID to resume without loss.",
        "last_event_id": last_event_id,
    }
    return json.dumps(data, separators=(",", ":"))


# -- Server-Sent Events ------------------------------------------------------------------------


async def _serve_sse(request: web.Request, node: NodeContext, stream: _EventStream) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # tell reverse proxies not to buffer the stream
        }
    )
    await response.prepare(request)
    last_id = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    try:
        await response.write(b": crdtmem event feed\n\n")
        if stream.reset is not None:
            await response.write(f"event: reset\ndata: {json.dumps(stream.reset)}\n\n".encode())
        async with contextlib.aclosing(stream.replay()) as replayed:
            async for event in replayed:
                await response.write(_sse_message(event))  # waits while the client's socket is full
                last_id = event.event_id
                await asyncio.sleep(0)  # a write waits only when the socket is full: others go next
        quiet_since = time.monotonic()
        while not _gone(request, node):
            try:
                live = await stream.next(POLL_SECONDS)
            except StopAsyncIteration:
                break
            except FeedOverflow as exc:
                node.metrics.inc("crdtmem_event_overflows_total", transport="sse")
                await response.write(f"event: overflow\ndata: {_overflow_json(exc, last_id)}\n\n".encode())
                break
            if live is not None:
                await response.write(_sse_message(live))
                last_id = live.event_id
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= HEARTBEAT_SECONDS:
                await response.write(b": heartbeat\n\n")
                quiet_since = time.monotonic()
    except ConnectionError:
        pass  # the client left; nothing to tell it
    return response


def _sse_message(event: MemoryEvent) -> bytes:
    return f"id: {event.event_id}\nevent: {event.event_type}\ndata: {_event_json(event)}\n\n".encode()


# -- WebSocket ---------------------------------------------------------------------------------


async def _serve_websocket(
    request: web.Request, ws: web.WebSocketResponse, node: NodeContext, stream: _EventStream
) -> web.StreamResponse:
    await ws.prepare(request)
    reader = asyncio.ensure_future(_ignore_until_closed(ws))
    last_id = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    try:
        if stream.reset is not None:
            await ws.send_str(json.dumps(stream.reset))
        async with contextlib.aclosing(stream.replay()) as replayed:
            async for event in replayed:
                await ws.send_str(_event_json(event))
                last_id = event.event_id
                await asyncio.sleep(0)
        while not ws.closed and not reader.done() and not _gone(request, node):
            try:
                live = await stream.next(POLL_SECONDS)
            except StopAsyncIteration:
                break
            except FeedOverflow as exc:
                node.metrics.inc("crdtmem_event_overflows_total", transport="ws")
                await ws.send_str(_overflow_json(exc, last_id))
                await ws.close(code=_WS_OVERFLOW, message=b"fell behind; reconnect with last_event_id")
                break
            if live is not None:
                await ws.send_str(_event_json(live))
                last_id = live.event_id
    except ConnectionError:
        pass
    finally:
        if not ws.closed:
            await ws.close()
        reader.cancel()
        await asyncio.wait({reader})
    return ws


async def _ignore_until_closed(ws: web.WebSocketResponse) -> None:
    """Read (and drop) client messages so close frames and pongs are processed."""
    async for message in ws:
        if message.type == WSMsgType.ERROR:
            return
