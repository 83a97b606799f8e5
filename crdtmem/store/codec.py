"""msgpack encoding of a :class:`~crdtmem.store.base.DeltaRecord`, shared by stores and the wire."""

from __future__ import annotations

from typing import Any

import msgpack

from ..errors import MalformedPayload
from .base import DeltaRecord

MAX_COVERED = 10_000
MAX_SEQ = 2**63 - 1  # the largest SQLite INTEGER


def delta_to_list(delta: DeltaRecord) -> list[Any]:
    fields = [delta.uid, delta.origin, delta.doc_id, delta.hlc, delta.deps, delta.update, delta.seqs]
    if delta.also:
        fields.append({c: list(s) for c, s in delta.also.items()})
    return fields


def delta_from_list(raw: Any) -> DeltaRecord:
    """Validate the shape of one wire delta; raises MalformedPayload with what is wrong."""
    if not isinstance(raw, list) or len(raw) not in (7, 8):
        raise MalformedPayload("a delta is [uid, origin, doc_id, hlc, deps, update, seqs, also?]")
    uid, origin, doc_id, hlc, deps, update, seqs = raw[:7]
    for name, value in (("uid", uid), ("origin", origin), ("doc_id", doc_id), ("hlc", hlc)):
        if not isinstance(value, str) or not value or len(value) > 256:
            raise MalformedPayload(f"delta {name} must be a non-empty string, got {value!r:.80}")
    if not isinstance(deps, bytes) or not isinstance(update, bytes):
        raise MalformedPayload("delta deps and update must be bytes")
    if (
        not isinstance(seqs, dict)
        or not seqs
        or not all(
            isinstance(c, str) and isinstance(s, int) and not isinstance(s, bool) and 0 < s <= MAX_SEQ
            for c, s in seqs.items()
        )
    ):
        raise MalformedPayload("delta seqs must map channel names to positive sequence numbers")
    also = _also(raw[7], seqs) if len(raw) == 8 else {}
    return DeltaRecord(uid, origin, doc_id, hlc, deps, update, tuple(seqs), dict(seqs), also)


def _also(raw: Any, seqs: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """Validate a coalesced delta's extra sequence numbers: ascending, below ``seqs``, bounded."""
    if not isinstance(raw, dict):
        raise MalformedPayload("delta 'also' must map channels to lists of sequence numbers")
    also: dict[str, tuple[int, ...]] = {}
    for channel, numbers in raw.items():
        if channel not in seqs or not isinstance(numbers, list) or len(numbers) > MAX_COVERED:
            raise MalformedPayload(f"delta 'also' for {channel!r} must list at most {MAX_COVERED} seqs")
        if not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s < seqs[channel] for s in numbers):
            raise MalformedPayload("delta 'also' seqs must be positive ints below the delta's seq")
        if numbers:
            also[channel] = tuple(sorted(set(numbers)))
    return also


def encode_delta(delta: DeltaRecord) -> bytes:
    return bytes(msgpack.packb(delta_to_list(delta), use_bin_type=True))


def decode_delta(blob: bytes) -> DeltaRecord:
    return delta_from_list(msgpack.unpackb(blob, raw=False))
