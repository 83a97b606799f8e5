"""msgpack encoding of a :class:`~crdtmem.store.base.DeltaRecord`, shared by stores and the wire."""

from __future__ import annotations

from typing import Any

import msgpack

from ..errors import MalformedPayload
from .base import DeltaRecord


def delta_to_list(delta: DeltaRecord) -> list[Any]:
    return [delta.uid, delta.origin, delta.doc_id, delta.hlc, delta.deps, delta.update, delta.seqs]


def delta_from_list(raw: Any) -> DeltaRecord:
    """Validate the shape of one wire delta; raises MalformedPayload with what is wrong."""
    if not isinstance(raw, list) or len(raw) != 7:
        raise MalformedPayload("a delta is [uid, origin, doc_id, hlc, deps, update, seqs]")
    uid, origin, doc_id, hlc, deps, update, seqs = raw
    for name, value in (("uid", uid), ("origin", origin), ("doc_id", doc_id), ("hlc", hlc)):
        if not isinstance(value, str) or not value or len(value) > 256:
            raise MalformedPayload(f"delta {name} must be a non-empty string, got {value!r:.80}")
    if not isinstance(deps, bytes) or not isinstance(update, bytes):
        raise MalformedPayload("delta deps and update must be bytes")
    if (
        not isinstance(seqs, dict)
        or not seqs
        or not all(
            isinstance(c, str) and isinstance(s, int) and not isinstance(s, bool) and s > 0
            for c, s in seqs.items()
        )
    ):
        raise MalformedPayload("delta seqs must map channel names to positive sequence numbers")
    return DeltaRecord(uid, origin, doc_id, hlc, deps, update, tuple(seqs), dict(seqs))


def encode_delta(delta: DeltaRecord) -> bytes:
    return bytes(msgpack.packb(delta_to_list(delta), use_bin_type=True))


def decode_delta(blob: bytes) -> DeltaRecord:
    return delta_from_list(msgpack.unpackb(blob, raw=False))
