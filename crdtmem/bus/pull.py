"""Pull since a version vector over the bus: a node asks the fleet for what it lacks, as it would
pull from a peer over HTTP (``POST /v1/sync/pull``), and takes it from the node that holds the most.

::

    requester ──offer {channels | nil, vectors}──▶ {prefix}.pull            (every node hears it)
      ◀── from each node holding more: {replica, ahead, channels} (entries it holds beyond them)
    requester ──page {channels, vectors, limit}──▶ {prefix}.pull.{node}       (the best offer)
      ◀── a crdtmem.deltas payload of export_since (header Crdtmem-More: 1 while a page was full),
          or, behind that node's folded log, crdtmem.states pages (``after``/``covers``/``cursor``)
      ─▶ Replica.apply_payload / apply_states (sender = the bus principal) ─▶ vectors rise ─▶ again

Everything pulled goes through the same path as the stream's messages: each delta authenticated
(origin and signature) and authorized against the bus principal's rights, states pages checked the
same way; the requester's vectors rise only with what it stored.

**Requests are signed** by the requesting node's key (the key that signs its deltas), over the
request and the inbox the answer goes to, so an answer cannot be redirected by replaying a request,
and one node cannot spend another's request rate. A node's rights on the bus are at most the bus
principal's (any client of the NATS account can read the streams); a ``replica:{id}`` entry in the
serving node's tokens file narrows what node ``id`` may pull: a request is answered for the channels
both may read and the serving node holds, and channels it may not read are left out as if unknown.
Where the serving node already knows the requester's key (listed in the tokens file, or pinned from
its deltas) a request signed with another key is refused.

**Requests are bounded** per requesting node (its id and key): a token bucket (``request_rate``,
``request_burst``); past it the request is answered with ``TooManyRequests`` and the seconds to wait,
counted in ``crdtmem_bus_requests_refused_total``. Pages are bounded by the node's ``pull_page``
limit and half the bus's largest message, and a request by :data:`MAX_REQUEST_BYTES`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import nats.errors

from ..access import AccessDenied, Principal
from ..engine import catchup
from ..engine import payload as wire
from ..engine.erasure import with_markers
from ..engine.replica import Replica
from ..errors import CrdtmemError, InvalidInput, MalformedPayload, PayloadError, TooManyRequests
from ..ids import parse_channels
from ..metrics import Metrics
from ..rates import RateLimiter
from ..store.base import VersionVector, within_bytes
from .requests import admit, check_key, open_request, refusal, retry_after, sign_request
from .subjects import PULL_TOKEN, Layout, escape_token

log = logging.getLogger("crdtmem.bus")

MAX_REQUEST_BYTES = 256 * 1024
"""A pull request: its channels and vectors (at most :data:`MAX_CHANNELS` channels)."""
MAX_CHANNELS = 10_000
MAX_PAGES = 100_000
"""A pull stops after this many pages (a node answering for ever)."""
MAX_RETRIES = 1_000
"""Page requests a pull sends again after a ``TooManyRequests`` (waiting as it says) before it fails."""
MORE = "Crdtmem-More"
"""Answer header: ``1`` when a deltas page was full (ask again with the new vectors)."""

Rights = Callable[[str], Principal | None]


def pull_subject(layout: Layout, replica_id: str | None = None) -> str:
    """Where offers are asked (``{prefix}.pull``) and where one node takes its page requests."""
    base = f"{layout.prefix}.{PULL_TOKEN}"
    return base if replica_id is None else f"{base}.{escape_token(replica_id)}"


@dataclass(frozen=True, slots=True)
class PullOffer:
    replica: str
    ahead: int
    channels: list[str]


@dataclass
class Pulled:
    """What a pull brought: from which node, how many deltas and states pages were applied."""

    node: str | None = None
    deltas: int = 0
    pages: int = 0
    states_pages: int = 0
    refused: str | None = None
    """Why the nodes refused (e.g. ``TooManyRequests``), when none offered."""


class PullServer:
    """Answers other nodes' pull offers and pages (module docstring) for one bus session."""

    def __init__(
        self,
        replica: Replica,
        layout: Layout,
        principal: Principal,
        limiter: RateLimiter,
        metrics: Metrics,
        *,
        rights_of: Rights | None,
        max_bytes: int,
    ):
        self.replica = replica
        self.layout = layout
        self.principal = principal
        self.limiter = limiter
        self.metrics = metrics
        self.rights_of = rights_of
        self.max_bytes = max_bytes
        self.served = 0

    async def handle(self, nc: Any, msg: Any) -> None:
        if not msg.reply:
            return
        headers: dict[str, str] | None = None
        op = "?"
        try:
            request = open_request(msg.data, msg.reply, on="pull", max_bytes=MAX_REQUEST_BYTES)
            if request.requester == self.replica.id:
                return  # its own offer request
            body = request.body
            op = str(body.get("op"))[:10]
            admit(self.limiter, self.metrics, request.bucket, op)
            check_key(self.replica, request)
            rights = self._rights(request.requester)
            if op == "offer":
                answer = self._offer(body, rights)
                if answer is None:
                    return  # nothing more than the requester holds: others answer
            elif op == "page":
                answer, more = self._page(body, rights)
                headers = {MORE: "1" if more else "0"}
                self.served += 1
            else:
                raise InvalidInput(f"unknown pull request {op!r}")
        except CrdtmemError as exc:
            if not isinstance(exc, TooManyRequests):
                self.metrics.inc("crdtmem_bus_requests_refused_total", op=op, reason=type(exc).__name__)
            answer = refusal(self.replica.id, exc)
        try:
            await nc.publish(msg.reply, answer, headers=headers)
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            log.warning("could not answer a pull request: %s: %s", type(exc).__name__, exc)

    def _rights(self, requester: str) -> Principal:
        if self.rights_of is not None:
            own = self.rights_of(f"replica:{requester}")
            if own is not None:
                return own
        return self.principal

    def _servable(self, channels: list[str] | None, rights: Principal) -> list[str]:
        mine = self.replica.channels
        candidates = channels if channels is not None else (mine or self.replica.store.channels())
        return sorted(
            {
                c
                for c in candidates
                if (mine is None or c in mine) and rights.may_read(c) and self.principal.may_read(c)
            }
        )

    def _offer(self, body: dict[str, Any], rights: Principal) -> bytes | None:
        channels = _channels(body.get("channels"))
        vectors = _vectors(body.get("vectors"))
        store = self.replica.store
        ahead: dict[str, int] = {}
        for channel in self._servable(channels, rights):
            theirs = vectors.get(channel, {})
            more = sum(max(0, seq - theirs.get(o, 0)) for o, seq in store.version_vector(channel).items())
            if more:
                ahead[channel] = more
        if not ahead:
            return None
        return _pack({"replica": self.replica.id, "ahead": sum(ahead.values()), "channels": sorted(ahead)})

    def _page(self, body: dict[str, Any], rights: Principal) -> tuple[bytes, bool]:
        channels = _channels(body.get("channels"))
        if channels is None:
            raise InvalidInput("a page request names its channels (those of the offer)")
        served = self._servable(channels, rights)
        vectors = {c: v for c, v in _vectors(body.get("vectors")).items() if c in served}
        replica = self.replica
        limit = body.get("limit", 1000)
        most = replica.limits.pull_page
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= most:
            raise InvalidInput(f"limit must be an int between 1 and {most} (limit pull_page)")
        if body.get("after") is not None or replica.behind(served, vectors):
            return self._states(body, served), False
        page = replica.store.deltas_since(served, vectors, limit)
        deltas = within_bytes(page, self.max_bytes // 2)
        deltas = with_markers(replica.store, deltas, served)  # a stub travels with its marker
        mine = replica.version_vectors(served)
        data = wire.encode(wire.Payload(replica.id, deltas, mine, replica.keys_for(deltas)))
        self.metrics.inc("crdtmem_bus_pulled_deltas_total", len(deltas))
        return data, len(page) >= limit or len(deltas) < len(page)

    def _states(self, body: dict[str, Any], served: list[str]) -> bytes:
        after, covers, cursor = body.get("after"), body.get("covers"), body.get("cursor")
        if after is not None and not isinstance(after, str):
            raise InvalidInput("after must be a memory id")
        if cursor is not None and not isinstance(cursor, bytes):
            raise InvalidInput("cursor must be the bytes of the first states page's cursor")
        if covers is not None:
            covers = _vectors(covers)
        data = catchup.export_states(
            self.replica.store,
            self.replica.id,
            served,
            after=after,
            limit=500,
            covers=covers,
            cursor=cursor,
            max_bytes=self.max_bytes,
            signer=self.replica.signer,
            version=catchup.STATES_VERSION,
            subscribed=self.replica.channels,
        )
        if len(data) > self.max_bytes:
            raise InvalidInput(
                f"a states page of {len(data)} bytes is over the bus's message limit of {self.max_bytes} "
                "bytes: raise max_payload on the NATS servers, or fill the node over HTTP"
            )
        return data


async def pull(
    nc: Any,
    replica: Replica,
    layout: Layout,
    principal: Principal,
    channels: list[str] | None = None,
    *,
    wait: float = 0.5,
    timeout: float = 30.0,
    limit: int = 1000,
    partitions: frozenset[int] | None = None,
) -> Pulled:
    """Pull what the fleet holds beyond this replica's vectors for ``channels`` (None: every channel
    the answering node holds and this replica subscribes to, in ``partitions`` of the layout; None:
    all), from the node that offers the most, and apply it as ``principal``. Raises
    :class:`TooManyRequests` when every answer was a refusal for rate."""
    if channels is None and replica.channels is not None:
        channels = list(replica.channels)
    names = list(parse_channels(channels)) if channels is not None else None
    vectors = replica.version_vectors(names) if names is not None else replica.version_vectors()
    offer, refusals = await _best_offer(nc, replica, layout, names, vectors, wait)
    if offer is None:
        limited = [r for r in refusals if r.startswith("TooManyRequests")]
        if limited and len(limited) == len(refusals):
            raise TooManyRequests(f"the fleet refused this node's pull: {limited[0]}")
        return Pulled(refused="; ".join(refusals[:3]) or None)
    if replica.channels is not None:
        offered = [c for c in offer.channels if c in replica.channels]
    else:
        offered = list(offer.channels)
    offered = [c for c in offered if layout.serves(c, partitions)]
    done = Pulled(node=offer.replica)
    states: dict[str, Any] = {}
    subject = pull_subject(layout, offer.replica)
    retries = 0
    for _ in range(MAX_PAGES):
        before = replica.version_vectors(offered)
        body: dict[str, Any] = {"op": "page", "channels": offered, "vectors": before, "limit": limit}
        body.update(states)
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, max_msgs=1)
        try:
            await nc.publish(subject, sign_request(replica, body, inbox, on="pull"), reply=inbox)
            answer = await sub.next_msg(timeout=timeout)
        except (nats.errors.Error, TimeoutError) as exc:
            raise CrdtmemError(f"node {offer.replica} stopped answering pull requests ({exc!r})") from exc
        finally:
            await sub.unsubscribe()
        data = answer.data
        wait_s = retry_after(data)
        if wait_s is not None and retries < MAX_RETRIES:  # a long catch-up goes at the server's rate
            retries += 1
            await asyncio.sleep(min(wait_s, timeout))
            continue
        if catchup.is_states(data):
            page = catchup.decode_states(data, max_bytes=replica.max_payload_bytes)
            if page.sender != offer.replica:
                raise AccessDenied(f"a states page for {offer.replica} came from {page.sender}")
            await replica.apply_states(data, sender=principal)
            done.states_pages += 1
            states = {}
            if page.next is not None:  # the next states page, then deltas from the risen vectors
                states = {"after": page.next, "covers": page.covers, "cursor": page.cursor}
            continue
        try:
            payload = wire.decode(data, max_bytes=replica.max_payload_bytes)
        except PayloadError as exc:
            raise CrdtmemError(f"node {offer.replica} refused a pull page: {_error_of(data)}") from exc
        if payload.sender != offer.replica:
            raise AccessDenied(f"a pull page for {offer.replica} came from {payload.sender}")
        result = await replica.apply_payload(payload, sender=principal, isolate=True)
        done.pages += 1
        done.deltas += result.applied
        more = (answer.headers or {}).get(MORE) == "1"
        if not more or replica.version_vectors(offered) == before:
            break
    log.info(
        "pulled %d delta(s) in %d page(s) and %d states page(s) of %d channel(s) from node %s",
        done.deltas,
        done.pages,
        done.states_pages,
        len(offered),
        offer.replica,
    )
    return done


async def _best_offer(
    nc: Any,
    replica: Replica,
    layout: Layout,
    channels: list[str] | None,
    vectors: dict[str, VersionVector],
    wait: float,
) -> tuple[PullOffer | None, list[str]]:
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    offers: list[PullOffer] = []
    refusals: list[str] = []
    try:
        body = {"op": "offer", "channels": channels, "vectors": vectors}
        await nc.publish(pull_subject(layout), sign_request(replica, body, inbox, on="pull"), reply=inbox)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except TimeoutError:
                break
            offer, why = _read_offer(msg.data)
            if offer is not None:
                offers.append(offer)
            else:
                refusals.append(why)
    finally:
        await sub.unsubscribe()
    best = max(offers, key=lambda o: o.ahead, default=None)
    return best, refusals


def _read_offer(data: bytes) -> tuple[PullOffer | None, str]:
    try:
        body = msgpack.unpackb(data[:MAX_REQUEST_BYTES], raw=False)
        replica, ahead, channels = body.get("replica"), body.get("ahead"), body.get("channels")
        if "error" in body:
            return None, str(body["error"])[:300]
        if not isinstance(replica, str) or not isinstance(ahead, int) or not isinstance(channels, list):
            return None, "a malformed offer"
        return PullOffer(replica, ahead, [str(c) for c in channels][:MAX_CHANNELS]), ""
    except (ValueError, TypeError, AttributeError, msgpack.ExtraData) as exc:
        return None, f"a malformed offer ({type(exc).__name__})"


def _error_of(data: bytes) -> str:
    try:
        return str(msgpack.unpackb(data[:MAX_REQUEST_BYTES], raw=False).get("error"))[:300]
    except (ValueError, TypeError, AttributeError, msgpack.ExtraData):
        return "an unreadable answer"


def _channels(value: object) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_CHANNELS:
        raise InvalidInput(f"channels must be a list of at most {MAX_CHANNELS:,} channel names, or nil")
    return list(parse_channels(value))


def _vectors(value: object) -> dict[str, VersionVector]:
    if value is None:
        return {}
    try:
        return wire.check_vectors(value)
    except (CrdtmemError, ValueError, TypeError) as exc:
        raise MalformedPayload(f"vectors: {exc}") from exc


def _pack(body: dict[str, Any]) -> bytes:
    return bytes(msgpack.packb(body, use_bin_type=True))
