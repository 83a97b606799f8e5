"""Appending to a Yrs array after a known item, without Yrs walking the array.

Yrs inserts into an array by index: ``insert(len, value)`` walks the array's items from the start to
find the end, and a conversation's messages are one item each (the lifecycle entry every write
re-asserts takes the clock between two appends, so Yrs cannot squash them). At 10,000 messages that
walk was most of an append's cost. An append is, in Yjs' terms, an item whose left origin is the
array's last item and whose right origin is none (what Yjs' ``push`` writes); Yrs integrates such an
item by finding its origin in the block store (a bisection), not by walking. :func:`update_after`
encodes that item as a v1 update, which the writer applies inside its own transaction, so Yrs
integrates it as its own change and reports it in the transaction's update like any other insert.
The item is the one ``push`` makes; nothing about the document format changes.

Encoding (lib0 v1, as ``ystructs`` reads it)::

    update = 1 client, (1 struct, client, clock, item), then an empty delete set
    item   = info (0x80 | 8: a left origin, Any content), origin (client, clock),
             content = count 1, the value as lib0 Any

Only the JSON values this module encodes exactly as pycrdt converts them are accepted (strings,
booleans, None, and lists and string-keyed dicts of those); for anything else (numbers: pycrdt picks
float or bigint by size) :func:`update_after` returns None and the caller inserts by index.
"""

from __future__ import annotations

from typing import Any

ItemId = tuple[int, int]

_ANY_CONTENT = 8
_HAS_ORIGIN = 0x80


def update_after(origin: ItemId, client: int, clock: int, value: Any) -> bytes | None:
    """A v1 update inserting ``value`` as item ``(client, clock)`` right after item ``origin`` (its
    last clock), with no right origin; None if ``value`` is not one this module encodes."""
    out = bytearray(b"\x01\x01")  # one client, one struct
    _uint(out, client)
    _uint(out, clock)
    out.append(_HAS_ORIGIN | _ANY_CONTENT)
    _uint(out, origin[0])
    _uint(out, origin[1])
    out.append(1)  # one value
    if not _any(out, value, 0):
        return None
    out.append(0)  # no deletions
    return bytes(out)


def _uint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)


def _string(out: bytearray, text: str) -> None:
    raw = text.encode("utf-8")
    _uint(out, len(raw))
    out += raw


def _any(out: bytearray, value: Any, depth: int) -> bool:
    if depth > 32:
        return False
    if isinstance(value, str):
        out.append(119)
        _string(out, value)
    elif value is None:
        out.append(126)
    elif value is True or value is False:
        out.append(120 if value else 121)
    elif isinstance(value, dict):
        out.append(118)
        _uint(out, len(value))
        for key, item in value.items():
            if not isinstance(key, str):
                return False
            _string(out, key)
            if not _any(out, item, depth + 1):
                return False
    elif isinstance(value, list):
        out.append(117)
        _uint(out, len(value))
        for item in value:
            if not _any(out, item, depth + 1):
                return False
    else:
        return False
    return True
