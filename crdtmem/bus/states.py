"""Document states over the bus: a node that needs entries its stream no longer holds asks the fleet.

A stream drops messages (its ``max_age``/``max_bytes``/``max_msgs`` limits, or the fold of
:mod:`crdtmem.bus.fold`). A node whose consumer had not received them yet, or a node that is new
while the stream no longer begins at its start, cannot get them from the stream. It never skips
them silently: it records how far the stream may miss entries for it (``need``, a stream sequence,
kept in the store so a restart does not forget it), reports not ready (``/readyz`` 503 with the
reason), and asks the other nodes on the subject ``{prefix}.states`` for document states, the same
``crdtmem.states`` pages an HTTP pull gets behind the compaction horizon (``docs/protocol.md``
§7.10)::

    requester ──offer {stream, channels, need}──▶ {prefix}.states         (every node hears it)
      ◀── offers {replica, floor, channels}: a node whose consumer on the stream holds every entry
          of those channels through stream sequence ``floor`` and that misses nothing itself
    requester ──page {to, channels, after, covers, cursor, states_v}──▶ {prefix}.states.{node}
      ◀── crdtmem.states pages until ``next`` is nil ─▶ Replica.apply_states(sender = bus principal)

Only an offer whose ``floor`` reaches ``need`` is taken: the states are read after that node
applied every entry the stream dropped. Meanwhile the consumer goes on (deltas whose dependencies
were dropped wait); once the states are in, the need is cleared and the node is ready again.

Both sides use the bus principal's rights (``docs/scale-out.md``): a node serves the channels that
principal may read, and applies the states as that principal (it must be allowed to write every
memory). Requests are untrusted input: bounded, validated, answered with a clear refusal. They are
**signed** by the requesting node, for the inbox of the answer, as pull requests are
(:mod:`crdtmem.bus.requests`): a request signed with another key than the one this node knows for
the node it names is refused, and the rate (:func:`~crdtmem.bus.requests.admit`; the requester
waits as a ``TooManyRequests`` refusal says) is kept per verified signer, so one node cannot spend
another's. An unsigned request (a build that did not sign them) is answered only where the bus
principal may vouch for the node it names unsigned, from a bucket of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import nats.errors

from ..access import AccessDenied, Principal
from ..engine import catchup
from ..engine import payload as wire
from ..engine.replica import Replica
from ..errors import CrdtmemError, InvalidInput, MalformedPayload, TooManyRequests
from ..ids import parse_channels
from ..metrics import Metrics
from ..store.base import VersionVector
from .pull import MAX_RETRIES
from .requests import Request, check_key, open_request, refusal, retry_after, sign_request
from .subjects import STATES_TOKEN, Layout, escape_token

log = logging.getLogger("crdtmem.bus")

MAX_REQUEST_BYTES = 64 * 1024
"""A states request is small: its channels and a page's covers."""
PAGE_DOCS = 500
"""Documents per states page (fewer when the bus's largest message would be exceeded)."""
NEED_KEY = "bus:need:"
"""Store meta ``bus:need:{stream}``: the stream sequence through which entries may be missing."""

Floor = Callable[[str], Awaitable[int | None]]
"""``floor(stream)``: through which stream sequence this node's consumer holds every entry of its
channels (None: it has no consumer on that stream)."""


class StatesUnavailable(CrdtmemError):
    """No node of the fleet could serve the document states this node needs; the message says why."""


def states_subject(layout: Layout, replica_id: str | None = None) -> str:
    """Where offers are asked (``{prefix}.states``) and where one node takes its page requests."""
    base = f"{layout.prefix}.{STATES_TOKEN}"
    return base if replica_id is None else f"{base}.{escape_token(replica_id)}"


@dataclass(frozen=True, slots=True)
class Offer:
    replica: str
    floor: int
    channels: list[str]


class Needs:
    """What each stream may miss for this node, durably (store meta), and why it is not ready."""

    def __init__(self, replica: Replica):
        self.replica = replica
        self.need: dict[str, int] = {}
        self.reason: dict[str, str] = {}
        self.changed = asyncio.Event()

    def load(self, streams: Sequence[str]) -> None:
        for stream in streams:
            value = self.replica.store.get_meta(NEED_KEY + stream)
            if value:
                self.need[stream] = int(value)
                self.reason.setdefault(stream, f"stream {stream} dropped entries this node has not received")

    def raise_to(self, stream: str, seq: int, why: str) -> None:
        """Entries of ``stream`` through ``seq`` may be missing here (durable before it returns)."""
        if seq <= self.need.get(stream, 0):
            return
        self.replica.store.set_meta(NEED_KEY + stream, str(seq))
        self.need[stream] = seq
        self.reason[stream] = why
        self.changed.set()
        log.warning("%s; catching up from document states", why, extra={"event": "bus_behind"})

    def filled(self, stream: str, through: int) -> None:
        """States holding every entry through ``through`` are in."""
        if self.need.get(stream, 0) > through:
            return
        self.need.pop(stream, None)
        self.reason.pop(stream, None)
        self.replica.store.set_meta(NEED_KEY + stream, "")
        log.info("caught up on stream %s from document states", stream, extra={"event": "bus_caught_up"})

    def behind(self) -> str | None:
        """Why this node is not ready (None: it misses nothing the streams dropped)."""
        if not self.need:
            return None
        return "; ".join(self.reason.get(s, s) for s in sorted(self.need))


class StatesServer:
    """Answers other nodes' states requests (module docstring) for one bus session."""

    def __init__(
        self,
        replica: Replica,
        layout: Layout,
        principal: Principal,
        needs: Needs,
        floor: Floor,
        *,
        max_bytes: int,
        admit: Callable[[str, str], None] | None = None,
        metrics: Metrics | None = None,
        partitions: frozenset[int] | None = None,
    ):
        self.replica = replica
        self.metrics = metrics or Metrics()
        self.partitions = partitions
        """The layout's partitions this node serves (None: all)."""
        self.admit = admit
        """Takes ``(requester, op)`` from its rate, raising TooManyRequests past it."""
        self.layout = layout
        self.principal = principal
        self.needs = needs
        self.floor = floor
        self.max_bytes = max_bytes
        """The bus's largest message (a page is cut at half of it; one larger document is refused)."""
        self.served = 0

    async def handle(self, msg: Any) -> None:
        if not msg.reply:
            return
        op = "?"
        try:
            opened = open_request(
                msg.data, msg.reply, on="states", max_bytes=MAX_REQUEST_BYTES, unsigned=True
            )
            if opened.requester == self.replica.id:
                return  # its own offer request
            request = opened.body
            op = str(request.get("op"))[:10]
            self._authenticate(opened)
            if self.admit is not None:
                self.admit(f"states/{opened.bucket}", op)
            if op == "offer":
                answer = await self._offer(request)
            elif op == "page":
                answer = self._page(request)
            else:
                raise InvalidInput(f"unknown states request {op!r}")
        except CrdtmemError as exc:
            if not isinstance(exc, TooManyRequests):  # admit counts those
                self.metrics.inc("crdtmem_bus_requests_refused_total", op=op, reason=type(exc).__name__)
            answer = refusal(self.replica.id, exc)
        await msg.respond(answer)

    def _authenticate(self, request: Request) -> None:
        """A signed request verifies with the key known for its node; an unsigned one is taken only
        where the bus principal may vouch for that node unsigned."""
        if request.key is not None:
            check_key(self.replica, request)
        elif not self.principal.may_introduce_unsigned(request.requester):
            raise AccessDenied(
                f"an unsigned states request naming node {request.requester!r}: this node answers "
                f"signed ones only, as the bus principal {self.principal.name!r} may not vouch for "
                f"{request.requester!r} unsigned (upgrade the requesting node, or list it under the "
                "principal's unsigned origins)"
            )

    def _servable(
        self, stream: str, channels: list[str] | None, wanted: frozenset[int] | None = None
    ) -> list[str]:
        """The channels of ``stream`` this node may serve to the bus principal (all it holds: None;
        all it holds in the partitions ``wanted``, if it serves every one of them)."""
        if stream not in {s.name for s in self.layout.streams}:
            raise InvalidInput(f"no stream {stream!r} in this node's bus layout")
        mine = self.replica.channels
        if channels is None:
            if not self._holds_all(wanted):
                return []  # it holds only some of those channels: it cannot serve them all
            channels = self.replica.store.channels()
        out = []
        for channel in channels:
            if self.layout.stream_of(channel).name != stream:
                continue
            if mine is not None and channel not in mine:
                continue
            if not self.layout.serves(channel, self.partitions) or not self.layout.serves(channel, wanted):
                continue
            if self.principal.may_read(channel):
                out.append(channel)
        return sorted(set(out))

    async def _offer(self, request: dict[str, Any]) -> bytes:
        stream = _text(request.get("stream"), "stream")
        channels = _channels(request.get("channels"))
        if stream in self.needs.need:
            return _pack({"replica": self.replica.id, "declined": "it misses entries of that stream too"})
        wanted = self._partitions(request.get("partitions"))
        if channels is None and not self._holds_all(wanted):
            return _pack({"replica": self.replica.id, "declined": "it holds only some of the channels"})
        served = self._servable(stream, channels, wanted)
        floor = await self.floor(stream)
        if floor is None:
            return _pack({"replica": self.replica.id, "declined": "it does not consume that stream"})
        return _pack({"replica": self.replica.id, "floor": floor, "channels": served})

    def _holds_all(self, wanted: frozenset[int] | None) -> bool:
        """Whether this node holds every channel of the partitions ``wanted`` (None: of all)."""
        if self.replica.channels is not None:
            return False
        return self.partitions is None or (wanted is not None and wanted <= self.partitions)

    def _partitions(self, value: object) -> frozenset[int] | None:
        if value is None:
            return None
        count = self.layout.partitions
        if (
            not isinstance(value, list)
            or not count
            or len(value) > count
            or not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < count for n in value)
        ):
            raise InvalidInput(f"partitions must be a list of this layout's partitions (0 to {count - 1})")
        return frozenset(value)

    def _page(self, request: dict[str, Any]) -> bytes:
        stream = _text(request.get("stream"), "stream")
        channels = _channels(request.get("channels"))
        if channels is None:
            raise InvalidInput("a page request names its channels (those of the offer)")
        served = self._servable(stream, channels)
        if served != sorted(set(channels)):
            refused = sorted(set(channels) - set(served))
            raise InvalidInput(f"this node does not serve {refused} to the bus principal")
        after = request.get("after")
        if after is not None and not isinstance(after, str):
            raise InvalidInput("after must be a memory id")
        covers, cursor = request.get("covers"), request.get("cursor")
        if covers is not None:
            try:
                covers = wire.check_vectors(covers)
            except (CrdtmemError, ValueError, TypeError) as exc:
                raise MalformedPayload(str(exc)) from exc
        if cursor is not None and not isinstance(cursor, bytes):
            raise InvalidInput("cursor must be the bytes of the first states page's cursor")
        version = request.get("states_v", 1)  # the states page version the requester reads
        if version not in catchup.STATES_VERSIONS or isinstance(version, bool):
            raise InvalidInput(f"states_v must be one of {catchup.STATES_VERSIONS}")
        data = catchup.export_states(
            self.replica.store,
            self.replica.id,
            served,
            after=after,
            limit=PAGE_DOCS,
            covers=covers,
            cursor=cursor,
            max_bytes=self.max_bytes,
            signer=self.replica.signer,
            version=version,
            subscribed=self.replica.channels,
        )
        if len(data) > self.max_bytes:
            raise InvalidInput(
                f"a states page of {len(data)} bytes (one large document) is over the bus's message "
                f"limit of {self.max_bytes} bytes: raise max_payload on the NATS servers, or fill the "
                "node over HTTP"
            )
        self.served += 1
        return data


async def fetch_states(
    nc: Any,
    replica: Replica,
    layout: Layout,
    principal: Principal,
    stream: str,
    need: int,
    *,
    wait: float,
    timeout: float,
    partitions: frozenset[int] | None = None,
) -> int:
    """Ask the fleet for the states of this node's channels of ``stream``, from a node that holds
    every entry through ``need``, and apply them; returns the stream sequence they cover. Raises
    :class:`StatesUnavailable` when no node offers them."""
    mine = layout.filters(replica.channels, partitions).get(stream)
    if mine is None:
        return need  # no channel of this node lives there
    wanted: list[str] | None = None
    if replica.channels is not None:
        wanted = [
            c for c in replica.channels if layout.stream_of(c).name == stream and layout.serves(c, partitions)
        ]
    offer = await _best_offer(nc, replica, layout, stream, wanted, need, wait, partitions)
    channels = offer.channels
    after: str | None = None
    covers: dict[str, VersionVector] | None = None
    cursor: bytes | None = None
    pages = limited = 0
    while True:
        body: dict[str, Any] = {
            "op": "page",
            "stream": stream,
            "channels": channels,
            "after": after,
            "states_v": catchup.STATES_VERSION,
        }
        if covers is not None:  # with the cursor: the serving node signs only covers it read itself
            body["covers"], body["cursor"] = covers, cursor
        try:
            reply = await _ask(nc, replica, states_subject(layout, offer.replica), body, timeout)
        except (nats.errors.Error, TimeoutError) as exc:
            raise StatesUnavailable(
                f"node {offer.replica} stopped answering states requests ({type(exc).__name__})"
            ) from exc
        wait_s = retry_after(reply.data)
        if wait_s is not None and limited < MAX_RETRIES:  # a long catch-up goes at the server's rate
            limited += 1
            await asyncio.sleep(min(wait_s, timeout))
            continue
        if not catchup.is_states(reply.data):
            raise StatesUnavailable(f"node {offer.replica} refused a states page: {_error_of(reply.data)}")
        page = catchup.decode_states(reply.data, max_bytes=replica.max_payload_bytes)
        if page.sender != offer.replica:
            raise StatesUnavailable(f"a states page for {offer.replica} came from {page.sender}")
        await replica.apply_states(reply.data, sender=principal)
        pages += 1
        if page.next is None:
            break
        after, covers, cursor = page.next, page.covers, page.cursor
    log.info(
        "applied %d states page(s) of %d channel(s) of stream %s from node %s",
        pages,
        len(channels),
        stream,
        offer.replica,
    )
    return offer.floor


async def _best_offer(
    nc: Any,
    replica: Replica,
    layout: Layout,
    stream: str,
    wanted: list[str] | None,
    need: int,
    wait: float,
    partitions: frozenset[int] | None,
) -> Offer:
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    offers: list[Offer] = []
    declined: list[str] = []
    try:
        request: dict[str, Any] = {"op": "offer", "stream": stream, "channels": wanted, "need": need}
        if wanted is None and partitions is not None:  # every channel of these partitions
            request["partitions"] = sorted(partitions)
        await nc.publish(
            states_subject(layout), sign_request(replica, request, inbox, on="states"), reply=inbox
        )
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except TimeoutError:
                break
            offer, why = _read_offer(msg.data)
            if offer is None:
                declined.append(why)
                continue
            if offer.floor < need:
                declined.append(f"{offer.replica} holds the stream through {offer.floor} only")
                continue
            if wanted is not None and not set(wanted) <= set(offer.channels):
                declined.append(f"{offer.replica} serves {len(offer.channels)} of {len(wanted)} channels")
                continue
            offers.append(offer)
            break  # the first node that holds it all
    finally:
        await sub.unsubscribe()
    if not offers:
        said = "; ".join(sorted(set(declined))[:5]) or "no node answered"
        raise StatesUnavailable(
            f"stream {stream} dropped entries through sequence {need} that this node has not received, "
            f"and no node could serve the document states ({said})"
        )
    return offers[0]


def _read_offer(data: bytes) -> tuple[Offer | None, str]:
    try:
        body = msgpack.unpackb(data[:MAX_REQUEST_BYTES], raw=False)
        replica = body.get("replica")
        if not isinstance(replica, str):
            return None, "a malformed offer"
        if "floor" not in body:
            return None, f"{replica}: {body.get('declined') or body.get('error') or 'declined'}"
        floor, channels = body["floor"], body["channels"]
        if not isinstance(floor, int) or not isinstance(channels, list):
            return None, f"{replica}: a malformed offer"
        return Offer(replica, floor, [str(c) for c in channels]), ""
    except (ValueError, TypeError, AttributeError, KeyError, msgpack.ExtraData) as exc:
        return None, f"a malformed offer ({type(exc).__name__})"


def _error_of(data: bytes) -> str:
    try:
        body = msgpack.unpackb(data[:MAX_REQUEST_BYTES], raw=False)
        return str(body.get("error") or body)[:300]
    except (ValueError, TypeError, AttributeError, msgpack.ExtraData):
        return "an unreadable answer"


async def _ask(nc: Any, replica: Replica, subject: str, body: dict[str, Any], timeout: float) -> Any:
    """One signed request, answered on an inbox of its own (the signature names it)."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, max_msgs=1)
    try:
        await nc.publish(subject, sign_request(replica, body, inbox, on="states"), reply=inbox)
        return await sub.next_msg(timeout=timeout)
    finally:
        await sub.unsubscribe()


def _channels(value: object) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > 10_000:
        raise InvalidInput("channels must be a list of at most 10,000 channel names, or nil")
    return list(parse_channels(value))


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise InvalidInput(f"{what} must be a name")
    return value


def _pack(body: dict[str, Any]) -> bytes:
    return bytes(msgpack.packb(body, use_bin_type=True))
