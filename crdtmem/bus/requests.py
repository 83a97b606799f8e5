"""Signed requests between nodes on the bus (pull, :mod:`crdtmem.bus.pull`; document states,
:mod:`crdtmem.bus.states`), their rate per requesting node, and refusals.

A request is a msgpack envelope ``{body, sig}``: ``body`` is the packed request map with ``from``
(the requesting node), ``key`` (its Ed25519 public key, the one that signs its deltas), ``reply``
(the inbox the answer goes to) and ``on`` (the kind of request: ``pull``, ``states``); ``sig``
signs :data:`DOMAIN` and the SHA-256 of ``body``. So an answer cannot be redirected by replaying a
request to another inbox, a pull request is not taken for a states request, and a node cannot
pose as another whose key the serving node knows (listed in the tokens file, or pinned from its
deltas): :func:`check_key`. The rate bucket of a request is its verified signer and key
(:attr:`Request.bucket`), so one node cannot spend another's rate.

A states request of a build that did not sign them is a bare map; it is taken only where the bus
principal may vouch for the claimed origin unsigned (the tokens file's ``unsigned``), and is
limited in a bucket of its own (``{node}/unsigned``), never the signed node's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgpack

from ..access import AccessDenied
from ..engine.replica import Replica
from ..engine.signing import verify_message
from ..errors import CrdtmemError, InvalidInput, MalformedPayload, TooManyRequests
from ..metrics import Metrics
from ..rates import RateLimiter

DOMAIN = b"crdtmem.bus-request/1\n"
MAX_ID_CHARS = 256


@dataclass(frozen=True, slots=True)
class Request:
    """An opened request: its body, the node it comes from, and the key that signed it."""

    body: dict[str, Any]
    requester: str
    key: bytes | None
    """None: an unsigned request (of a build that did not sign states requests)."""

    @property
    def bucket(self) -> str:
        """The rate bucket this request is taken from."""
        if self.key is None:
            return f"{self.requester}/unsigned"
        return f"{self.requester}/{self.key.hex()[:16]}"


def sign_request(replica: Replica, body: dict[str, Any], reply: str, *, on: str | None = None) -> bytes:
    """A request envelope: ``body`` (with ``from``, ``key``, ``reply`` and ``on``) and its signature."""
    if replica.signer is None:
        raise InvalidInput("this replica has no signing key: it cannot sign bus requests")
    body = {**body, "from": replica.id, "key": replica.signer.public, "reply": reply}
    if on is not None:
        body["on"] = on
    packed = msgpack.packb(body, use_bin_type=True)
    sig = replica.signer.sign_message(DOMAIN + hashlib.sha256(packed).digest())
    return bytes(msgpack.packb({"body": packed, "sig": sig}, use_bin_type=True))


def open_request(
    data: bytes, reply: str | None, *, on: str, max_bytes: int, unsigned: bool = False
) -> Request:
    """The signed request ``data`` for the inbox ``reply`` and the kind ``on``; raises if it is not
    one. ``unsigned``: a bare request map (with ``op`` and ``from``) is opened too, with no key."""
    if len(data) > max_bytes:
        raise InvalidInput(f"a bus request is at most {max_bytes} bytes, got {len(data)}")
    try:
        envelope = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.ExtraData) as exc:
        raise MalformedPayload(f"a bus request is a signed msgpack envelope: {exc}") from exc
    if unsigned and isinstance(envelope, dict) and "sig" not in envelope and "op" in envelope:
        requester = envelope.get("from")
        if not isinstance(requester, str) or not 0 < len(requester) <= MAX_ID_CHARS:
            raise MalformedPayload("a bus request names its node (from)")
        return Request(envelope, requester, None)
    try:
        packed, sig = envelope["body"], envelope["sig"]
        if not isinstance(packed, bytes) or not isinstance(sig, bytes):
            raise TypeError("body and sig are bytes")
        body = msgpack.unpackb(packed, raw=False, strict_map_key=True)
        requester, key = body["from"], body["key"]
    except (ValueError, TypeError, KeyError, msgpack.ExtraData) as exc:
        raise MalformedPayload(f"a bus request is a signed msgpack envelope: {exc}") from exc
    if not isinstance(requester, str) or not isinstance(key, bytes) or not isinstance(body, dict):
        raise MalformedPayload("a bus request names its node (from) and key")
    if not 0 < len(requester) <= MAX_ID_CHARS:
        raise MalformedPayload(f"a bus request's node id is 1 to {MAX_ID_CHARS} characters")
    if body.get("reply") != reply:
        raise AccessDenied("this request was signed for another inbox")
    if body.get("on", "pull") != on:  # pull requests of earlier builds do not say
        raise AccessDenied(f"this request was signed for {body.get('on', 'pull')!r}, not {on!r}")
    if not verify_message(key, DOMAIN + hashlib.sha256(packed).digest(), sig):
        raise AccessDenied("the request's signature does not verify with its key")
    return Request(body, requester, key)


def check_key(replica: Replica, request: Request) -> None:
    """Refuse a request signed with a key other than the one this node knows for its node."""
    if request.key is None:
        return
    keyring = replica.keyring
    known = keyring.known(request.requester) if keyring is not None else ()
    if known and request.key not in known:
        raise AccessDenied(f"node {request.requester!r} signs with another key here")


def admit(limiter: RateLimiter, metrics: Metrics, key: str, op: str) -> None:
    """Take one request from ``key``'s bucket, or raise :class:`TooManyRequests` (counted)."""
    wait = limiter.acquire(key)
    if wait > 0:
        metrics.inc("crdtmem_bus_requests_refused_total", op=op, reason="TooManyRequests")
        raise TooManyRequests(
            f"this node answers at most {limiter.rate:g} requests a second per node; retry in {wait:.2f} s",
            wait,
        )


def refusal(replica_id: str, exc: CrdtmemError) -> bytes:
    """The answer to a refused request: ``{replica, error}``, and ``retry_after`` for a rate."""
    body: dict[str, Any] = {"replica": replica_id, "error": f"{type(exc).__name__}: {exc}"}
    if isinstance(exc, TooManyRequests):
        body["retry_after"] = round(exc.retry_after, 3)
    return bytes(msgpack.packb(body, use_bin_type=True))


def retry_after(data: bytes) -> float | None:
    """The seconds a ``TooManyRequests`` refusal asks to wait (None: not such a refusal)."""
    try:
        body = msgpack.unpackb(data[: 64 * 1024], raw=False)
        wait = body.get("retry_after")
    except (ValueError, TypeError, AttributeError, msgpack.ExtraData):
        return None
    return float(wait) if isinstance(wait, (int, float)) and not isinstance(wait, bool) else None
