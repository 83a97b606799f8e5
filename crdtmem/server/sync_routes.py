"""The routes replicas sync through.

    POST /v1/sync/pull   msgpack {channels, vectors, limit} -> a crdtmem.deltas payload (one page);
                         header X-Crdtmem-More: 1 when the page was full (ask again with new vectors)
    POST /v1/sync/push   a crdtmem.deltas payload -> JSON {applied, duplicates, pending, vectors}
    GET  /v1/sync/ws     the replication WebSocket (see protocol.py and link.py)

Every channel named must be readable (pull, ws) or writable (push, ws) by the caller's principal;
a replica principal must claim its own replica id. Every delta pushed (over HTTP or the WebSocket)
is applied with the caller's principal as its sender: only origins it may introduce, only memories
it may write (crdtmem.engine.trust, crdtmem.engine.remote).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import msgpack
from aiohttp import web

from ..access import AccessDenied, Principal
from ..document.erasure import is_marker, is_stub
from ..engine import payload as wire
from ..engine.erasure import with_markers
from ..engine.statepages import VERSIONS as STATES_VERSIONS
from ..engine.trust import refusal, unsigned_refusal
from ..errors import BehindHorizon, CrdtmemError, InvalidInput, MalformedPayload, UnsupportedVersion
from ..ids import check_replica_id, parse_channels
from ..store.base import DeltaRecord, within_bytes
from ..sync.link import Link
from ..sync.protocol import FrameError, check_vectors, decode_frame, encode_frame, payload_version
from .auth import PRINCIPAL

if TYPE_CHECKING:
    from .context import NodeContext

log = logging.getLogger("crdtmem.link")

HELLO_TIMEOUT = 10.0


def _states_page(replica: Any, channels: list[str], body: dict[str, Any]) -> web.StreamResponse:
    """A states page for a puller behind the horizon (protocol §7.10), or 409 if it cannot read one."""
    if body.get("states") is not True:
        raise BehindHorizon(
            "the log here is folded past your version vectors; pull with states: true to catch up "
            "from document states (protocol §7.10)"
        )
    after, covers, cursor = body.get("after"), body.get("covers"), body.get("cursor")
    version = body.get("states_v", 1)  # the states page version the puller reads (absent: 1, unsigned)
    if version not in STATES_VERSIONS or isinstance(version, bool):
        raise UnsupportedVersion(
            f"pull asks for states version {version!r}; this node writes {STATES_VERSIONS}"
        )
    if after is not None and not isinstance(after, str):
        raise InvalidInput("after must be a memory id")
    if cursor is not None and not isinstance(cursor, bytes):
        raise InvalidInput("cursor must be the bytes of the first states page's cursor")
    try:
        covers = check_vectors(covers) if covers is not None else None
    except FrameError as exc:
        raise MalformedPayload(str(exc)) from exc
    data = replica.export_states(
        channels, after=after, limit=STATES_PAGE, covers=covers, cursor=cursor, version=version
    )
    response = web.Response(
        body=data, content_type="application/x-crdtmem-states", headers={"X-Crdtmem-States": "1"}
    )
    response.enable_compression()
    return response


STATES_PAGE = 500
"""Documents per states page."""


def routes(node: NodeContext) -> list[web.RouteDef]:
    def admit(principal: Principal) -> None:
        """Before a replication WebSocket's deltas frame: its principal's rate and loop share."""
        node.check_rate(principal)
        node.admit_loop(principal)

    async def pull(request: web.Request) -> web.StreamResponse:
        principal = request[PRINCIPAL]
        body = await _msgpack_body(request)
        channels = _channels(body.get("channels"))
        _require(principal, channels, "read")
        try:
            vectors = check_vectors(body.get("vectors", {}))
        except FrameError as exc:
            raise MalformedPayload(str(exc)) from exc
        limit = body.get("limit", 1000)
        most = node.replica.limits.pull_page
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= most:
            raise InvalidInput(f"limit must be an int between 1 and {most} (limit pull_page)")
        version = body.get("v", 1)  # the payload version the puller reads (absent: 1, unsigned)
        if version not in wire.VERSIONS or isinstance(version, bool):
            raise UnsupportedVersion(
                f"pull asks for payload version {version!r}; this node writes {wire.VERSIONS}"
            )
        replica = node.replica
        replica.acknowledged(_peer_name(principal.name, body.get("from")), vectors)
        if replica.behind(channels, vectors):  # the log no longer holds what the peer misses
            return _states_page(replica, channels, body)
        mine = replica.version_vectors(channels)
        page = replica.store.deltas_since(channels, vectors, limit)
        deltas = within_bytes(page, replica.max_payload_bytes // 2)  # the peer's limit is as big, or bigger
        deltas = with_markers(replica.store, deltas, channels)  # a stub travels with its marker
        keys = replica.keys_for(deltas) if version >= 2 else {}
        data = wire.encode(wire.Payload(replica.id, deltas, mine, keys), version)
        node.metrics.inc("crdtmem_pull_deltas_total", len(deltas))
        more = "1" if len(page) >= limit or len(deltas) < len(page) else "0"
        response = web.Response(
            body=data, content_type="application/x-crdtmem-deltas", headers={"X-Crdtmem-More": more}
        )
        if len(data) > 1024:
            response.enable_compression()  # gzip if the peer accepts it: catch-up pages shrink ~5x
        return response

    async def push(request: web.Request) -> web.StreamResponse:
        principal = request[PRINCIPAL]
        node.check_rate(principal)
        raw = await request.read()  # its bytes were charged as it was read (app._read_body)
        received = wire.decode(raw, max_bytes=node.replica.max_payload_bytes)
        node.check_volume(principal, deltas=len(received.deltas))
        received = wire.restrict(received, principal.may_write)  # a signed claim names every channel
        _require(principal, sorted({c for d in received.deltas if not d.seqs for c in _claimed(d)}), "write")
        _require_origins(principal, received, node.replica.id)
        # delta by delta: what the caller may not do is decided against and counted, the rest applies
        with node.metrics.timer("crdtmem_apply_seconds", source="push"):
            result = await node.replica.apply_payload(received, sender=principal, isolate=True)
        channels = sorted({c for d in received.deltas for c in d.seqs})
        return web.json_response(
            {
                "applied": result.applied,
                "duplicates": result.duplicates,
                "pending": result.parked,
                "ignored": result.ignored,
                "refused": result.rejected,
                "vectors": node.replica.version_vectors(channels),
            }
        )

    async def websocket(request: web.Request) -> web.StreamResponse:
        principal = request[PRINCIPAL]
        ws = web.WebSocketResponse(max_msg_size=node.settings.max_frame_bytes, heartbeat=20.0)
        await ws.prepare(request)
        try:
            hello = await _receive_hello(ws)
            claimed = hello["replica"]
            if principal.replica_id is not None and claimed != principal.replica_id:
                raise AccessDenied(f"this token belongs to replica {principal.replica_id!r}, not {claimed!r}")
            requested: list[str] = hello["channels"]
            _require(principal, requested, "read")
            accept = [c for c in requested if principal.may_write(c)]
        except CrdtmemError as exc:
            node.metrics.inc("crdtmem_frames_rejected_total", reason=type(exc).__name__)
            with contextlib.suppress(ConnectionError):  # the peer may be gone already
                await ws.send_bytes(encode_frame("error", code=type(exc).__name__, message=str(exc)))
            await ws.close(code=4403 if isinstance(exc, AccessDenied) else 4400)
            return ws
        try:
            await ws.send_bytes(_hello(node, hello, requested, accept))
        except ConnectionError:  # the peer went away after its hello: nothing to link
            return ws
        settings = node.link_settings(hello.get("mode", "eager"), hello.get("interval_ms", 0))
        link = Link(
            node.replica,
            ws,
            peer_id=claimed,
            push_channels=requested,
            accept_channels=accept,
            peer_vectors=hello.get("vectors", {}),
            settings=settings,
            metrics=node.metrics,
            sender=principal,
            admit=lambda: admit(principal),  # each deltas frame, as each push
            meter=lambda work: node.loop.metered(principal.name, work),
            admit_volume=lambda deltas, size: node.check_volume(principal, deltas=deltas, size=size),
            version=payload_version(hello),
        )
        node.links.add(link)
        node.metrics.inc("crdtmem_ws_connections_total", side="server")
        fields = {"peer_id": claimed, "principal": principal.name, "mode": settings.mode}
        log.info(
            "link from replica %s connected (%s mode, accepting %d of %d channels)",
            claimed,
            settings.mode,
            len(accept),
            len(requested),
            extra={"event": "link_connected", **fields, "channels": requested},
        )
        try:
            await link.run()
        finally:
            node.links.discard(link)
            log.info(
                "link from replica %s disconnected", claimed, extra={"event": "link_disconnected", **fields}
            )
        return ws

    return [
        web.post("/v1/sync/pull", pull),
        web.post("/v1/sync/push", push),
        web.get("/v1/sync/ws", websocket),
    ]


def _hello(node: NodeContext, hello: dict[str, Any], requested: list[str], accept: list[str]) -> bytes:
    """The server's hello frame, answering the peer's ``hello``."""
    return encode_frame(
        "hello",
        replica=node.replica.id,
        channels=requested,
        accept=accept,
        mode=hello.get("mode", "eager"),
        interval_ms=hello.get("interval_ms", 0),
        vectors=node.replica.version_vectors(accept),
        versions=list(wire.VERSIONS),
    )


async def _receive_hello(ws: web.WebSocketResponse) -> dict[str, Any]:
    try:
        message = await ws.receive(timeout=HELLO_TIMEOUT)
    except TimeoutError as exc:
        raise MalformedPayload("no hello frame within 10 s") from exc
    frame = decode_frame(message.data if isinstance(message.data, (bytes, str)) else b"")
    if frame.type != "hello":
        raise FrameError(f"the first frame must be hello, got {frame.type}")
    return frame.body


async def _msgpack_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:
        raise MalformedPayload(f"request body is not valid msgpack: {exc}") from exc
    if not isinstance(body, dict):
        raise MalformedPayload("request body must be a msgpack map")
    return body


def _channels(raw: Any) -> list[str]:
    channels = list(parse_channels(raw if raw is not None else []))
    if not channels:
        raise InvalidInput("name at least one channel")
    return channels


def _claimed(delta: DeltaRecord) -> dict[str, int]:
    return delta.signature.seqs if delta.signature is not None else delta.seqs


def _require_origins(principal: Principal, received: wire.Payload, own_origin: str) -> None:
    """A push may only carry deltas of origins the caller may introduce (the engine would refuse
    them one by one; a client sending them at all gets told, and nothing of the payload applies).
    Deltas of this replica's own origin are left to the engine: it holds them, or refuses them."""
    for origin in sorted({d.origin for d in received.deltas}):
        if not principal.may_introduce(origin):
            raise AccessDenied(
                f"{refusal(origin, principal, own_origin)}; nothing of this payload was applied"
            )
    for origin in sorted({d.origin for d in received.deltas if d.signature is None and d.header is None}):
        reason = unsigned_refusal(origin, principal)
        if reason is not None:
            raise AccessDenied(f"{reason}; nothing of this payload was applied")
    # a stub is justified only by its memory's signed erase marker, which a pusher sends with it
    # (whether the memory was forgotten here is not told: that would answer for memories it cannot read)
    marked = {d.doc_id for d in received.deltas if is_marker(d.deps, d.update)}
    for delta in received.deltas:
        if is_stub(delta.deps, delta.update) and delta.doc_id not in marked:
            raise AccessDenied(
                f"delta {delta.uid} is a stub (a forgotten memory's delta without content) and the "
                f"payload carries no erase marker of memory {delta.doc_id!r}: a stub is taken only with "
                "its memory's signed marker (protocol §7.9); nothing of this payload was applied"
            )


def _require(principal: Principal, channels: list[str], access: str) -> None:
    check = principal.may_read if access == "read" else principal.may_write
    denied = [c for c in channels if not check(c)]
    if denied:
        raise AccessDenied(f"{principal.name} may not {access} {', '.join(denied)}")


def _peer_name(principal: str, claimed: object) -> str:
    """The name a puller's acknowledgement is kept under: the replica id it pulls as (the name its
    pushes and link frames are kept under too, so one peer holds one lease and one mark), or, for a
    puller naming no valid replica id, its principal's name."""
    try:
        return check_replica_id(claimed, "from")
    except InvalidInput:
        return f"{principal}/?"[:300]
