"""Decode and compare Yrs state vectors (``{client_id: clock}``), used for causal delivery.

Every delta travels with the state vector its writer had observed (its *dependencies*). A replica
applies a delta only once its own state vector covers those dependencies, so Yrs never has to hold
pending updates (which ``Doc.get_update()`` would not persist).
"""

from __future__ import annotations

import pycrdt

from ..errors import MalformedPayload

StateVector = dict[int, int]


def _varuints(data: bytes, count: int | None = None) -> list[int]:
    """The leading varuints of ``data`` (all of them, or the first ``count``), in one pass."""
    values: list[int] = []
    value = shift = 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            values.append(value)
            if count is not None and len(values) == count:
                return values
            value = shift = 0
        else:
            shift += 7
            if shift > 63:
                raise MalformedPayload("state vector integer is too long")
    if shift:
        raise MalformedPayload("truncated state vector")
    return values


_DECODED: dict[bytes, StateVector] = {}
"""Recently decoded short vectors, by their bytes: a remote apply decodes the same vector twice per
delta or more (a delta's ``deps`` are, byte for byte, its document's state vector after the
previous delta of its writer; the document's vector is read again after every delta applied), and
decoding one in Python costs microseconds a vector."""
_DECODED_MOST = 256
_DECODED_BYTES = 128
"""Only vectors this short are kept: the table holds at most about 1 MiB, whatever peers send."""


def decode(data: bytes) -> StateVector:
    """Decode Yrs' v1 state-vector encoding (a new dict each call: callers may change it)."""
    known = _DECODED.get(data) if type(data) is bytes else None
    if known is not None:
        return known.copy()
    vector = _decode(data)
    if type(data) is bytes and len(data) <= _DECODED_BYTES:
        if len(_DECODED) >= _DECODED_MOST:
            _DECODED.clear()  # not an LRU: a full table is rare, and clearing is safe from any thread
        _DECODED[data] = vector.copy()
    return vector


def _decode(data: bytes) -> StateVector:
    values = _varuints(data)
    if not values or len(values) < 1 + 2 * values[0]:
        raise MalformedPayload("truncated state vector")
    if len(values) > 1 + 2 * values[0]:
        raise MalformedPayload("trailing bytes after state vector")
    return dict(zip(values[1::2], values[2::2], strict=True))


def first_block(update: bytes) -> tuple[int, int, int] | None:
    """``(client blocks, client, start clock)`` of a v1 update's first block; None if it has none.

    Only the header is read: enough to know which client wrote a single-writer update and where
    its structs start, without decoding the structs.
    """
    head = _varuints(update[:40], 4)
    if not head:
        raise MalformedPayload("truncated update")
    if head[0] == 0:
        return None
    if len(head) < 4:
        raise MalformedPayload("truncated update")
    return head[0], head[2], head[3]


def dependencies(deps: bytes, update: bytes) -> StateVector:
    """What a delta needs before it can be applied: its declared ``deps``, raised to the start of
    its own first block of structs. A sender cannot under-declare its way into Yrs' pending state
    (which ``Doc.get_update`` would not persist). Only the update's header is read: see
    :func:`validate` for the rest."""
    need = decode(deps)
    block = first_block(update)
    if block is not None:
        _, client, clock = block
        need[client] = max(need.get(client, 0), clock)
    return need


def validate(update: bytes) -> None:
    """Decode every struct of ``update``; raise MalformedPayload if it is not a Yrs update.

    Applying an update validates it the same way; this is for updates that are stored to wait for
    their dependencies, where garbage must not be parked.
    """
    try:
        pycrdt.get_state(update)
    except Exception as exc:  # pycrdt raises plain ValueError variants
        raise MalformedPayload(f"update does not decode as a Yrs update: {exc}") from exc


def covers(have: StateVector, need: StateVector) -> bool:
    """Whether a document at ``have`` has seen everything in ``need``."""
    return all(have.get(client, 0) >= clock for client, clock in need.items())
