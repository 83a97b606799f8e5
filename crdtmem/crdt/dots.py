"""Dots: the unique tag of one write, ``"{replica_id}:{hlc}"``.

A replica's HLC never repeats, so a dot is unique per write without a separate counter. Dot entries
are stored as Yrs map values of the form ``{"v": <JSON text>, "hlc": <HLC string>, "by": <replica>}``;
the value travels as JSON text so integers and nested values survive Yrs' number model exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, NamedTuple, TypeGuard

from ..errors import InvalidInput

JSONValue = Any
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""One encoder for every value (``json.dumps`` with options builds a new encoder per call)."""
HLC_TEXT = re.compile(r"[0-9]{15}\.[0-9]{6}")
"""The fixed-width HLC form (see :mod:`crdtmem.clock`); entries stamped otherwise are ignored."""


MAX_DEPTH = 64
"""Deepest nesting of lists and maps in one value. Far beyond any real metadata, far below the
recursion limits of the parsers that read values back (here, in the store, in other clients)."""

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def encode_value(value: JSONValue) -> str:
    """Canonical JSON text: sorted keys, no whitespace, so equal values compare equal as text.

    Raises InvalidInput for values JSON cannot carry (NaN, infinities, sets, bytes, objects) and for
    values nested more than :data:`MAX_DEPTH` deep.
    """
    kind = type(value)
    if kind is int:  # the encoder's own form of an int, without its dispatch (a bound error below)
        try:
            return int.__repr__(value)
        except ValueError as exc:
            raise InvalidInput(f"values must be plain JSON: {exc}") from exc
    if value is None or kind is bool:
        return "null" if value is None else "true" if value else "false"
    try:
        text = _CANONICAL.encode(value)
        text.encode("utf-8")  # lone surrogates would make Yrs panic
    except RecursionError as exc:
        raise InvalidInput(f"values may nest lists and maps at most {MAX_DEPTH} deep") from exc
    except (TypeError, ValueError) as exc:
        raise InvalidInput(
            f"values must be plain JSON with valid UTF-8 text (no NaN/inf, sets, bytes, objects or "
            f"lone surrogates): {exc}"
        ) from exc
    if isinstance(value, str):  # no nesting to count (a 1 MiB text is scanned twice otherwise)
        return text
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        raise InvalidInput(f"values may nest lists and maps at most {MAX_DEPTH} deep")
    return text


def _depth(text: str) -> int:
    """How deep the lists and maps of JSON ``text`` nest (brackets inside strings do not count)."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def check_text(value: str, what: str) -> str:
    """Refuse strings Yrs cannot store (lone surrogates are not valid UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"{what} must be valid UTF-8 text (no lone surrogates)") from exc
    return value


_is_hlc = HLC_TEXT.fullmatch


def is_hlc_text(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and _is_hlc(value) is not None


_PLAIN_STRING = re.compile(r'"[^"\\\x00-\x1f]*"')
"""JSON text of a string with nothing escaped (most values): its content is the text between quotes."""


def decode_value(text: str) -> JSONValue:
    if _PLAIN_STRING.fullmatch(text):
        return text[1:-1]
    return json.loads(text)


def put_entries(ymap: Any, entries: Iterable[tuple[str, dict[str, str]]]) -> None:
    """Insert many entries into a map: in one step on a document's root map (``insert_many``),
    one key at a time on anything else."""
    insert_many = getattr(ymap, "insert_many", None)
    if insert_many is not None:
        insert_many(entries)
        return
    for key, value in entries:
        ymap[key] = value


class Dot(NamedTuple):
    """A write's identity. Orders by (hlc, replica), the tie-break every read uses.

    A named tuple rather than a dataclass: reads build one per live entry, and a tuple is several
    times cheaper to make and to compare.
    """

    hlc: str
    replica: str

    def key(self) -> str:
        return f"{self.replica}:{self.hlc}"


class DotEntry(NamedTuple):
    """A value tagged with the dot of the write that produced it."""

    dot: Dot
    text: str  # canonical JSON of the value

    @property
    def value(self) -> JSONValue:
        return decode_value(self.text)

    def to_yrs(self) -> dict[str, str]:
        return {"v": self.text, "hlc": self.dot.hlc, "by": self.dot.replica}

    @classmethod
    def from_yrs(cls, raw: object) -> DotEntry | None:
        """Read a stored entry; returns None for entries of the wrong shape (foreign writers)."""
        if not isinstance(raw, dict):
            return None
        text, hlc, by = raw.get("v"), raw.get("hlc"), raw.get("by")
        if not (isinstance(text, str) and isinstance(by, str) and isinstance(hlc, str) and _is_hlc(hlc)):
            return None
        return cls(Dot(hlc, by), text)
