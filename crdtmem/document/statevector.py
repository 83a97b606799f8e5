"""Decode and compare Yrs state vectors (``{client_id: clock}``), used for causal delivery.

Every delta travels with the state vector its writer had observed (its *dependencies*). A replica
applies a delta only once its own state vector covers those dependencies, so Yrs never has to hold
pending updates (which ``Doc.get_update()`` would not persist).
"""

from __future__ import annotations

import pycrdt

from ..errors import MalformedPayload

StateVector = dict[int, int]


def _read_varuint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise MalformedPayload("truncated state vector")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise MalformedPayload("state vector integer is too long")


def decode(data: bytes) -> StateVector:
    """Decode Yrs' v1 state-vector encoding."""
    count, pos = _read_varuint(data, 0)
    vector: StateVector = {}
    for _ in range(count):
        client, pos = _read_varuint(data, pos)
        clock, pos = _read_varuint(data, pos)
        vector[client] = clock
    if pos != len(data):
        raise MalformedPayload("trailing bytes after state vector")
    return vector


def first_block(update: bytes) -> tuple[int, int, int] | None:
    """``(client blocks, client, start clock)`` of a v1 update's first block; None if it has none.

    Only the header is read: enough to know which client wrote a single-writer update and where
    its structs start, without decoding the structs.
    """
    blocks, pos = _read_varuint(update, 0)
    if blocks == 0:
        return None
    _structs, pos = _read_varuint(update, pos)
    client, pos = _read_varuint(update, pos)
    clock, _ = _read_varuint(update, pos)
    return blocks, client, clock


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
