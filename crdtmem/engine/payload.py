"""The exchange payload: what ``export_since`` produces and ``apply`` consumes.

A payload is one msgpack map (``docs/protocol.md`` has the normative form)::

    {"format": "crdtmem.deltas", "v": 1, "from": <replica id>,
     "vectors": {channel: {origin: seq}},   # the sender's version vectors for these channels
     "deltas": [[uid, origin, doc_id, hlc, deps, update, {channel: seq}], ...]}

Payloads come from peers and are untrusted: :func:`decode` checks size, format, version and the shape of
every field before anything is applied, and raises a :class:`~crdtmem.errors.PayloadError` subclass
that says what was wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import msgpack

from ..errors import InvalidChannel, MalformedPayload, PayloadTooLarge, UnsupportedVersion
from ..ids import Channel
from ..store.base import DeltaRecord, VersionVector
from ..store.codec import delta_from_list, delta_to_list

FORMAT = "crdtmem.deltas"
VERSION = 1
DEFAULT_MAX_PAYLOAD_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Payload:
    sender: str
    deltas: list[DeltaRecord]
    vectors: dict[str, VersionVector] = field(default_factory=dict)


def encode(payload: Payload) -> bytes:
    body = {
        "format": FORMAT,
        "v": VERSION,
        "from": payload.sender,
        "vectors": payload.vectors,
        "deltas": [delta_to_list(d) for d in payload.deltas],
    }
    return bytes(msgpack.packb(body, use_bin_type=True))


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
    if type(body.get("v")) is not int or body["v"] != VERSION:  # not True, not 1.0
        raise UnsupportedVersion(
            f"payload format version {body.get('v')!r}; this build speaks version {VERSION}"
        )
    sender, raw_deltas, raw_vectors = body.get("from"), body.get("deltas"), body.get("vectors", {})
    if not isinstance(sender, str) or not sender:
        raise MalformedPayload("payload 'from' must be the sender's replica id")
    if not isinstance(raw_deltas, list):
        raise MalformedPayload("payload 'deltas' must be a list")
    deltas = []
    for raw in raw_deltas:
        delta = delta_from_list(raw)
        single = f"{delta.origin}:{delta.hlc}"
        # a coalesced delta's uid goes on with "/"; a page may carry only some of its seqs (no `also`)
        if delta.uid != single and not delta.uid.startswith(single + "/"):
            raise MalformedPayload(f"delta uid {delta.uid!r} does not match its origin and hlc")
        for channel in delta.seqs:
            try:
                Channel.parse(channel)
            except InvalidChannel as exc:
                raise MalformedPayload(f"delta {delta.uid!r}: {exc}") from exc
        deltas.append(delta)
    return Payload(sender, deltas, _vectors(raw_vectors))


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
