"""msgpack encoding of a :class:`~crdtmem.store.base.DeltaRecord`, shared by stores and the wire."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack

from ..document.erasure import is_stub
from ..errors import MalformedPayload
from .values import DeltaRecord, Signature, received_delta, received_signature

MAX_COVERED = 10_000
MAX_SEQ = 2**63 - 1  # the largest SQLite INTEGER
SIGNATURE_BYTES = 64


def delta_to_list(delta: DeltaRecord, version: int = 1) -> list[Any]:
    """The wire form: version 1 ``[uid, origin, doc_id, hlc, deps, update, seqs, also?]``; version 2
    ``[uid, origin, doc_id, hlc, deps, update, seqs, also, sig]``, where a signed delta carries its
    origin's whole claim as ``seqs``/``also`` (relays restrict nothing of it) and ``sig`` is nil for
    an unsigned one."""
    signed = delta.signature if version >= 2 else None
    claim = signed if signed is not None else (delta.header if version >= 2 else None)
    seqs, also = (claim.seqs, claim.also) if claim is not None else (delta.seqs, delta.also)
    fields: list[Any] = [delta.uid, delta.origin, delta.doc_id, delta.hlc, delta.deps, delta.update, seqs]
    if also or version >= 2:
        fields.append({c: list(s) for c, s in also.items()})
    if version >= 2:
        fields.append(signed.sig if signed is not None else None)
    return fields


def delta_from_list(raw: Any, version: int = 1, header: bytes | None = None) -> DeltaRecord:
    """Validate the shape of one wire delta; raises MalformedPayload with what is wrong.

    ``header`` (version 2): the origin's header signature the payload carries for this delta,
    already checked for its length; a signed delta keeps it with its signature, a content-free
    stub carries it as its proof (its claim as delivered), any other delta drops it. The record
    is built once with it (the hot path of every inbound payload)."""
    if version >= 2:
        if not isinstance(raw, list) or len(raw) != 9:
            raise MalformedPayload(
                "a version 2 delta is [uid, origin, doc_id, hlc, deps, update, seqs, also, sig]"
            )
        sig = raw[8]
        if sig is not None and (not isinstance(sig, bytes) or len(sig) != SIGNATURE_BYTES):
            raise MalformedPayload(f"delta {raw[0]!r:.80}: sig must be nil or {SIGNATURE_BYTES} bytes")
        return _delta(raw, sig, header)
    if not isinstance(raw, list) or len(raw) not in (7, 8):
        raise MalformedPayload("a delta is [uid, origin, doc_id, hlc, deps, update, seqs, also?]")
    return _delta(raw, None, None)


def _delta(raw: list[Any], sig: bytes | None, header: bytes | None) -> DeltaRecord:
    uid, origin, doc_id, hlc, deps, update, seqs = raw[:7]
    if not (_text(uid) and _text(origin) and _text(doc_id) and _text(hlc)):
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
    also = _also(raw[7], seqs) if len(raw) >= 8 else {}
    channels, seqs = tuple(seqs), dict(seqs)
    if sig is not None:
        signature = received_signature(sig, dict(seqs), dict(also), header)
        return received_delta(uid, origin, doc_id, hlc, deps, update, channels, seqs, also, signature, None)
    if header is not None and is_stub(deps, update):  # a delta with content needs its sig
        proof = received_signature(header, dict(seqs), dict(also), None)
        return received_delta(uid, origin, doc_id, hlc, deps, update, channels, seqs, also, None, proof)
    return received_delta(uid, origin, doc_id, hlc, deps, update, channels, seqs, also, None, None)


def _text(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 256


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
    """The stored form (waiting and decided deltas): the version 1 fields with the seqs this replica
    logs, then ``[sig, claim seqs, claim also]`` of a signed delta."""
    fields = delta_to_list(delta)
    if delta.signature is not None:
        if len(fields) == 7:
            fields.append({})
        signed = delta.signature
        fields += [signed.sig, signed.seqs, {c: list(s) for c, s in signed.also.items()}]
        if signed.header is not None:
            fields.append(signed.header)
    return bytes(msgpack.packb(fields, use_bin_type=True))


def decode_delta(blob: bytes) -> DeltaRecord:
    raw = msgpack.unpackb(blob, raw=False)
    if isinstance(raw, list) and len(raw) in (11, 12):
        delta = delta_from_list(raw[:8])
        sig, seqs, also = raw[8:11]
        header = raw[11] if len(raw) == 12 else None
        return dataclasses.replace(
            delta, signature=Signature(sig, seqs, {c: tuple(s) for c, s in also.items()}, header)
        )
    return delta_from_list(raw)


def encode_claim(signature: Signature) -> bytes:
    """A signature's claim as the store keeps it beside the delta (``deltas.claim``): ``[seqs,
    also]``, then the header signature if there is one (a stub keeps only this blob)."""
    fields: list[Any] = [signature.seqs, {c: list(s) for c, s in signature.also.items()}]
    if signature.header is not None:
        fields.append(signature.header)
    return bytes(msgpack.packb(fields, use_bin_type=True))


def encode_stub_claim(proof: Signature) -> bytes:
    """A stub's proof (``DeltaRecord.header``) in the same blob: its header signature third."""
    return encode_claim(Signature(b"", proof.seqs, proof.also, proof.sig))


def decode_claim(sig: bytes, blob: bytes) -> Signature:
    seqs, also, *rest = msgpack.unpackb(blob, raw=False)
    header = rest[0] if rest and isinstance(rest[0], bytes) else None
    return Signature(sig, seqs, {c: tuple(s) for c, s in also.items()}, header)


def decode_stored(sig: bytes | None, blob: bytes | None) -> tuple[Signature | None, Signature | None]:
    """A stored delta's (signature, stub proof) from its ``sig`` and ``claim`` columns."""
    if blob is None:
        return None, None
    claim = decode_claim(bytes(sig) if sig is not None else b"", bytes(blob))
    if sig is not None:
        return claim, None
    if claim.header is None:
        return None, None
    return None, Signature(claim.header, claim.seqs, claim.also)
