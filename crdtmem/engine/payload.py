"""The exchange payload: what ``export_since`` produces and ``apply`` consumes.

A payload is one msgpack map (``docs/protocol.md`` has the normative form)::

    {"format": "crdtmem.deltas", "v": 2, "from": <replica id>,
     "vectors": {channel: {origin: seq}},   # the sender's version vectors for these channels
     "keys": {origin: <32-byte Ed25519 public key>},   # version 2: keys of the signed deltas' origins
     "deltas": [[uid, origin, doc_id, hlc, deps, update, {channel: seq}, {channel: [seq]}, sig], ...],
     "headers": {uid: <64-byte header signature>}}   # optional: the origins' header signatures

Version 1 deltas have 7 or 8 elements and no signature; receivers read both versions, and senders
send version 1 to a peer that does not announce version 2 (it then loses the signatures).

Payloads come from peers and are untrusted: :func:`decode` checks size, format, version and the shape of
every field before anything is applied, and raises a :class:`~crdtmem.errors.PayloadError` subclass
that says what was wrong.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import msgpack

from ..errors import InvalidChannel, MalformedPayload, PayloadTooLarge, UnsupportedVersion
from ..ids import Channel
from ..store.base import DeltaRecord, VersionVector
from ..store.codec import SIGNATURE_BYTES, delta_from_list, delta_to_list

FORMAT = "crdtmem.deltas"
VERSION = 2
"""The version this build writes; it reads every one of :data:`VERSIONS`."""
VERSIONS = (1, 2)
DEFAULT_MAX_PAYLOAD_BYTES = 32 * 1024 * 1024
KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class Payload:
    sender: str
    deltas: list[DeltaRecord]
    vectors: dict[str, VersionVector] = field(default_factory=dict)
    keys: dict[str, bytes] = field(default_factory=dict)
    """Public keys of the signed deltas' origins, as the sender knows them (receivers may pin one
    they do not know yet, trust on first use)."""


def encode(payload: Payload, version: int = VERSION) -> bytes:
    """The payload in ``version`` (1 drops signatures and keys: for peers that speak only 1)."""
    if version not in VERSIONS:
        raise UnsupportedVersion(f"cannot write payload version {version}; this build writes {VERSIONS}")
    body: dict[str, object] = {
        "format": FORMAT,
        "v": version,
        "from": payload.sender,
        "vectors": payload.vectors,
        "deltas": [delta_to_list(d, version) for d in payload.deltas],
    }
    if version >= 2:
        body["keys"] = payload.keys
        headers = {d.uid: h for d in payload.deltas if (h := _header_of(d)) is not None}
        if headers:
            body["headers"] = headers
    return bytes(msgpack.packb(body, use_bin_type=True))


def _header_of(delta: DeltaRecord) -> bytes | None:
    if delta.signature is not None:
        return delta.signature.header
    return delta.header.sig if delta.header is not None else None


def decode(data: bytes, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> Payload:
    """Parse and validate a payload; raises PayloadError subclasses, never anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedPayload(f"a payload is bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"payload is {len(data)} bytes, over the limit of {max_bytes}; ask for smaller pages "
            "(export_since(..., limit=N)) or raise max_payload_bytes"
        )
    if not data:
        raise MalformedPayload("empty payload")
    try:
        body = msgpack.unpackb(bytes(data), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise MalformedPayload(f"payload is not valid msgpack (truncated or garbage): {exc}") from exc
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise MalformedPayload(f"not a crdtmem payload (expected format {FORMAT!r})")
    version = body.get("v")
    if type(version) is not int or version not in VERSIONS:  # not True, not 1.0
        raise UnsupportedVersion(
            f"payload format version {version!r}; this build speaks versions {', '.join(map(str, VERSIONS))}"
        )
    sender, raw_deltas, raw_vectors = body.get("from"), body.get("deltas"), body.get("vectors", {})
    if not isinstance(sender, str) or not sender:
        raise MalformedPayload("payload 'from' must be the sender's replica id")
    if not isinstance(raw_deltas, list):
        raise MalformedPayload("payload 'deltas' must be a list")
    headers = _headers(body.get("headers", {}), len(raw_deltas)) if version >= 2 else {}
    deltas = []
    valid: set[str] = set()  # channel names parsed already: a page names a few channels many times
    for raw in raw_deltas:
        uid = raw[0] if headers and isinstance(raw, list) and raw else None
        delta = delta_from_list(raw, version, headers.get(uid) if isinstance(uid, str) else None)
        single = f"{delta.origin}:{delta.hlc}"
        # a coalesced delta's uid goes on with "/"; a page may carry only some of its seqs (no `also`)
        if delta.uid != single and not delta.uid.startswith(single + "/"):
            raise MalformedPayload(f"delta uid {delta.uid!r} does not match its origin and hlc")
        for channel in delta.seqs:
            if channel in valid:
                continue
            try:
                Channel.parse(channel)
            except InvalidChannel as exc:
                raise MalformedPayload(f"delta {delta.uid!r}: {exc}") from exc
            valid.add(channel)
        deltas.append(delta)
    return Payload(sender, deltas, _vectors(raw_vectors), _keys(body.get("keys", {})))


def _headers(raw: Any, count: int) -> dict[str, bytes]:
    """The origins' header signatures (``headers``: {uid: sig}), attached to their deltas as they
    are read (:func:`~crdtmem.store.codec.delta_from_list`): a signed delta keeps it with its
    signature, a stub carries it as its proof (its claim as delivered)."""
    if (
        not isinstance(raw, dict)
        or len(raw) > count
        or not all(
            isinstance(u, str) and isinstance(h, bytes) and len(h) == SIGNATURE_BYTES for u, h in raw.items()
        )
    ):
        raise MalformedPayload(f"payload 'headers' must map delta uids to {SIGNATURE_BYTES}-byte signatures")
    return raw


def _keys(raw: Any) -> dict[str, bytes]:
    if not isinstance(raw, dict) or not all(
        isinstance(o, str) and isinstance(k, bytes) and len(k) == KEY_BYTES for o, k in raw.items()
    ):
        raise MalformedPayload(f"payload 'keys' must map origins to {KEY_BYTES}-byte public keys")
    return dict(raw)


def check_vectors(raw: Any) -> dict[str, VersionVector]:
    """``{channel: {origin: seq}}`` from untrusted input; raises MalformedPayload."""
    return _vectors(raw)


def _vectors(raw: Any) -> dict[str, VersionVector]:
    if not isinstance(raw, dict):
        raise MalformedPayload("payload 'vectors' must map channels to version vectors")
    vectors: dict[str, VersionVector] = {}
    for channel, vector in raw.items():
        if not isinstance(channel, str) or not isinstance(vector, dict):
            raise MalformedPayload("payload 'vectors' must map channels to version vectors")
        if not all(isinstance(o, str) and isinstance(s, int) for o, s in vector.items()):
            raise MalformedPayload(f"version vector of {channel!r} must map origins to ints")
        vectors[channel] = dict(vector)
    return vectors


def normalize_since(
    channels: Sequence[str], since: VersionVector | dict[str, VersionVector] | None
) -> dict[str, VersionVector]:
    """Accept ``{origin: seq}`` for a single channel or ``{channel: {origin: seq}}`` for several."""
    if not since:
        return {}
    if all(isinstance(v, dict) for v in since.values()):
        return {c: dict(cast(VersionVector, v)) for c, v in since.items()}
    if len(channels) != 1:
        raise MalformedPayload("with several channels, pass since as {channel: {origin: seq}}")
    if not all(isinstance(v, int) for v in since.values()):
        raise MalformedPayload("a version vector maps origin replica ids to ints")
    return {channels[0]: dict(since)}  # type: ignore[arg-type]


def restrict(payload: Payload, keep: Callable[[str], bool]) -> Payload:
    """Each delta logged only on the channels ``keep`` accepts (those a sender may write, or a link
    accepts from its peer). A signed delta carries its origin's claim on every channel of its memory
    (``crdtmem.engine.signing``); the signature still covers what is kept. A delta may be left with
    no channel: the caller decides what that means."""
    if all(keep(c) for d in payload.deltas for c in d.seqs):
        return payload
    deltas = []
    for delta in payload.deltas:
        seqs = {c: s for c, s in delta.seqs.items() if keep(c)}
        also = {c: s for c, s in delta.also.items() if c in seqs}
        deltas.append(dataclasses.replace(delta, seqs=seqs, channels=tuple(seqs), also=also))
    return dataclasses.replace(payload, deltas=deltas)
