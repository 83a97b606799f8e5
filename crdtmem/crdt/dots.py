"""Dots: the unique tag of one write, ``"{replica_id}:{hlc}"``.

A replica's HLC never repeats, so a dot is unique per write without a separate counter. Dot entries
are stored as Yrs map values of the form ``{"v": <JSON text>, "hlc": <HLC string>, "by": <replica>}``;
the value travels as JSON text so integers and nested values survive Yrs' number model exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JSONValue = Any


def encode_value(value: JSONValue) -> str:
    """Canonical JSON text: sorted keys, no whitespace, so equal values compare equal as text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def decode_value(text: str) -> JSONValue:
    return json.loads(text)


@dataclass(frozen=True, slots=True, order=True)
class Dot:
    """A write's identity. Orders by (hlc, replica), the tie-break every read uses."""

    hlc: str
    replica: str

    def key(self) -> str:
        return f"{self.replica}:{self.hlc}"


@dataclass(frozen=True, slots=True)
class DotEntry:
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
        if not (isinstance(text, str) and isinstance(hlc, str) and isinstance(by, str)):
            return None
        return cls(Dot(hlc, by), text)
