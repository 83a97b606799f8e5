"""States pages on the wire (``docs/protocol.md`` §7.10): what a replica behind the horizon of a
peer's log catches up from, and who is trusted to serve one.

Version 2 (signed)::

    {"format": "crdtmem.states", "v": 2, "from": <replica id>, "key": <bin 32>,
     "body": <bin: msgpack {"channels", "states", "covers", "next", "markers", "cursor"}>,
     "sig":  <bin 64: Ed25519 of PAGE_DOMAIN ‖ SHA-256(msgpack([from, body])) by from's key>}

Version 1 is the same map with the body's fields at the top level and no signature.

A page folds many origins' deltas into document states, so no origin can sign it: the replica that
serves it signs it with its own key, and a receiver takes it only from a principal it trusts as a
*state server* (the tokens file's ``"states": true``), signed by that replica's key as known here
(listed, or pinned on first use; listed only in strict mode). The signature binds the page to its
server, so a relay or proxy between the two cannot change a state, the covered vectors or the
markers, nor pass off its own page as the server's. What a state server itself says is still its
word (the module :mod:`crdtmem.engine.catchup` bounds what it can do with it).

``cursor`` is the server's signature of the covered vectors (``COVERS_DOMAIN``): a page run reads
them once, before its first state, and the puller sends them back with the cursor for every later
page; a server signs no covers it did not read itself, so a puller cannot get a page signed with
vectors of its choosing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from ..access import Principal
from ..document.epoch import state_epoch
from ..document.erasure import is_marker
from ..errors import CrdtmemError, InvalidInput, MalformedPayload, PayloadTooLarge, UnsupportedVersion
from ..ids import Channel
from ..store.base import Store, VersionVector
from ..store.codec import delta_from_list, delta_to_list
from . import payload as wire
from .signing import KEY_BYTES, SIGNATURE_BYTES, Keyring, Signer, encode_key, verify_message

log = logging.getLogger("crdtmem.trust")

FORMAT = "crdtmem.states"
VERSIONS = (1, 2, 3)
VERSION = 3
"""Version 3 is version 2 that may hold a rebased memory's document (``docs/protocol.md`` §7.11);
a page asked for in version 1 or 2 that would hold one is refused instead (UnsupportedVersion),
so a receiver that does not know epochs never merges one into its epoch of the memory."""
PAGE_DOMAIN = b"crdtmem.states-signature/1\n"
COVERS_DOMAIN = b"crdtmem.states-covers/1\n"


def is_states(data: bytes) -> bool:
    """Whether ``data`` looks like a states page (the full decode checks it)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return False  # the payload decoder says what is wrong with it
    return FORMAT.encode() in bytes(data[:48])


@dataclass(frozen=True, slots=True)
class StatesPage:
    sender: str
    channels: list[str]
    states: list[tuple[str, bytes]]
    covers: dict[str, VersionVector]
    next: str | None
    markers: list[Any]
    version: int = 1
    key: bytes | None = None
    sig: bytes | None = None
    message: bytes = b""
    """What ``sig`` signs (version 2)."""
    cursor: bytes | None = None


def _canonical(covers: dict[str, VersionVector]) -> list[Any]:
    return sorted([channel, sorted(vector.items())] for channel, vector in covers.items())


def covers_message(sender: str, channels: Sequence[str], covers: dict[str, VersionVector]) -> bytes:
    packed = msgpack.packb([sender, sorted(channels), _canonical(covers)], use_bin_type=True)
    return COVERS_DOMAIN + hashlib.sha256(packed).digest()


def page_message(sender: str, body: bytes) -> bytes:
    return PAGE_DOMAIN + hashlib.sha256(msgpack.packb([sender, body], use_bin_type=True)).digest()


def export_states(
    store: Store,
    replica_id: str,
    channels: Sequence[str],
    *,
    after: str | None = None,
    limit: int | None = None,
    covers: dict[str, VersionVector] | None = None,
    cursor: bytes | None = None,
    max_bytes: int = wire.DEFAULT_MAX_PAYLOAD_BYTES,
    signer: Signer | None = None,
    version: int = VERSION,
    subscribed: Sequence[str] | None = None,
) -> bytes:
    """One states page of ``channels``: the first with ``after=None``, then ``after`` = the page's
    ``next``, with the first page's ``covers`` (and, version 2, its ``cursor``). ``subscribed``: the
    channels the serving replica syncs (None: every channel), for :func:`own_covers`."""
    if version not in VERSIONS:
        raise UnsupportedVersion(f"states page version {version!r}; this build writes {VERSIONS}")
    if version >= 2 and signer is None:
        raise InvalidInput("a version 2 states page needs this replica's signing key")
    if covers is None:  # read before the states: every state read after holds what they claim
        covers = {c: store.version_vector(c) for c in channels}
        covers.update(own_covers(store, replica_id, channels, subscribed))
    elif version >= 2:
        assert signer is not None
        if cursor is None or not verify_message(
            signer.public, covers_message(replica_id, channels, covers), cursor
        ):
            raise InvalidInput(
                "covers of a later states page must come with the cursor of the page run's first page "
                "(this replica signs only vectors it read itself)"
            )
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
            if version < 3 and state_epoch(state) is not None:
                raise UnsupportedVersion(
                    f"memory {doc_id} is rebased (protocol revision 5, §7.11); a states page holding "
                    f"it is version 3, and this one was asked for in version {version}: upgrade crdtmem"
                )
            states.append((doc_id, state))
            size += len(state) + len(doc_id)
    markers: list[Any] = []
    if nxt is None:
        markers = [
            delta_to_list(d, 2) for d in store.deltas_since(channels, {}) if is_marker(d.deps, d.update)
        ]
    fields: dict[str, Any] = {
        "channels": list(channels),
        "states": [[i, s] for i, s in states],
        "covers": covers,
        "next": nxt,
        "markers": markers,
    }
    if version < 2:
        page = {"format": FORMAT, "v": 1, "from": replica_id, **fields}
        return bytes(msgpack.packb(page, use_bin_type=True))
    assert signer is not None
    fields["cursor"] = signer.sign_message(covers_message(replica_id, channels, covers))
    body = bytes(msgpack.packb(fields, use_bin_type=True))
    signed = {
        "format": FORMAT,
        "v": version,
        "from": replica_id,
        "key": signer.public,
        "body": body,
        "sig": signer.sign_message(page_message(replica_id, body)),
    }
    return bytes(msgpack.packb(signed, use_bin_type=True))


def own_covers(
    store: Store, replica_id: str, channels: Sequence[str], subscribed: Sequence[str] | None
) -> dict[str, VersionVector]:
    """The covers a partial replica adds for the channels it logs its own deltas on but does not
    sync (``docs/protocol.md`` §7.10): ``{channel: {replica_id: seq}}``.

    Such an entry is of a memory the replica holds, so of one of the channels it syncs; when the
    page run serves all of them, every state it holds is in the run and the covers may claim the
    entry. Without that claim a puller never gets it once the log folded it: a full replica that
    superseded the delta (§7.11) or decided against it never relays it either."""
    if subscribed is None or not set(subscribed) <= set(channels):
        return {}
    found: dict[str, VersionVector] = {}
    for channel in store.channels():
        seq = store.version_vector(channel).get(replica_id, 0) if channel not in subscribed else 0
        if seq:
            found[channel] = {replica_id: seq}
    return found


def decode_states(data: bytes, *, max_bytes: int) -> StatesPage:
    """Parse and validate a states page (either version); raises PayloadError subclasses. Whether
    its server is trusted is :func:`page_refusal`'s to say."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"states page is {len(data)} bytes, over the limit of {max_bytes}")
    outer = _unpack(data, "states page")
    if not isinstance(outer, dict) or outer.get("format") != FORMAT:
        raise MalformedPayload(f"not a states page (expected format {FORMAT!r})")
    version = outer.get("v")
    if type(version) is not int or version not in VERSIONS:
        raise UnsupportedVersion(f"states page version {version!r}; this build reads {VERSIONS}")
    sender = outer.get("from")
    if not isinstance(sender, str) or not sender:
        raise MalformedPayload("states page 'from' must be the sender's replica id")
    key = sig = cursor = None
    message = b""
    body = outer
    if version >= 2:
        key, sig, raw = outer.get("key"), outer.get("sig"), outer.get("body")
        if not isinstance(key, bytes) or len(key) != KEY_BYTES:
            raise MalformedPayload(f"states page 'key' must be {KEY_BYTES} bytes")
        if not isinstance(sig, bytes) or len(sig) != SIGNATURE_BYTES:
            raise MalformedPayload(f"states page 'sig' must be {SIGNATURE_BYTES} bytes")
        if not isinstance(raw, bytes):
            raise MalformedPayload("states page 'body' must be bytes")
        body, message = _unpack(raw, "states page body"), page_message(sender, raw)
        if not isinstance(body, dict):
            raise MalformedPayload("states page 'body' must be a map")
        cursor = body.get("cursor")
        if not isinstance(cursor, bytes) or len(cursor) != SIGNATURE_BYTES:
            raise MalformedPayload(f"states page 'cursor' must be {SIGNATURE_BYTES} bytes")
    channels, states = body.get("channels"), body.get("states")
    nxt, raw_markers = body.get("next"), body.get("markers", [])
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
    pairs = [(i, s) for i, s in states]
    return StatesPage(sender, list(channels), pairs, covers, nxt, markers, version, key, sig, message, cursor)


def _unpack(data: bytes, what: str) -> Any:
    try:
        return msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
    except Exception as exc:
        raise MalformedPayload(f"{what} is not valid msgpack: {exc}") from exc


def page_refusal(page: StatesPage, sender: Principal, keyring: Keyring | None) -> str | None:
    """Why a states page delivered by ``sender`` is not taken here, or None if it is.

    ``sender`` must be trusted as a state server. A signed page must be its own (``from`` is the
    sender's replica id) and verify against that replica's key known here, or, with no key known
    and trust on first use, against the key it presents, which is then pinned. An unsigned
    (version 1) page is taken only from a sender that may vouch for every origin it covers
    unsigned, as for unsigned deltas.
    """
    if not sender.states:
        return (
            f"{sender.name} is not trusted to serve document states here (its tokens entry has no "
            '"states": true)'
        )
    if page.version < 2 or page.sig is None or page.key is None:
        unvouched = sorted(
            {o for v in page.covers.values() for o in v if not sender.may_introduce_unsigned(o)}
        )
        if unvouched:
            return (
                f"an unsigned (version 1) states page from {sender.name}, which may not vouch unsigned "
                f"for origin(s) {', '.join(map(repr, unvouched[:5]))}"
            )
        return None
    if sender.replica_id is not None and page.sender != sender.replica_id:
        return f"the states page names {page.sender!r} as its server, but {sender.name} delivered it"
    keys = keyring.known(page.sender) if keyring is not None else ()
    if keys:
        if any(verify_message(key, page.message, page.sig) for key in keys):
            return None
        return f"the states page is not signed by the key of {page.sender!r} known here"
    if keyring is not None and keyring.strict:
        return f"no key of {page.sender!r} is listed here, and this node trusts listed keys only"
    if not verify_message(page.key, page.message, page.sig):
        return f"the states page's signature does not verify against the key it presents for {page.sender!r}"
    if keyring is not None:
        keyring.pin(page.sender, page.key)
        log.info(
            "pinned the public key %s of %s (first use, a states page)", encode_key(page.key), page.sender
        )
    return None
