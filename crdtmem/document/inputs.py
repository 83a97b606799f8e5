"""What a write brings to a memory document, checked and normalized: initial content by kind,
conversation messages, metadata keys; and values as the document reads them back (canonical JSON,
an OR-set's first occurrence of each), so a write can build its record without reading it back.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

from ..crdt.dots import JSONValue, check_text, decode_value, encode_value
from ..errors import InvalidInput
from .records import REGISTER_KINDS, check_kind


class Unset(enum.Enum):
    """The default of an argument whose every value, ``None`` included, means something (a fact's
    content may be JSON ``null``)."""

    UNSET = "UNSET"


UNSET = Unset.UNSET


def check_content(kind: str, content: Any) -> Any:
    """Validate initial content for ``kind``; returns it normalized."""
    check_kind(kind)
    if kind in REGISTER_KINDS:
        if content is UNSET:
            raise InvalidInput(f"a {kind} needs content: any JSON value (text, number, object, ...)")
        if isinstance(content, str):
            return check_text(content, f"{kind} content")
        return decode_value(encode_value(content))  # as the register reads it back: plain JSON
    if content is UNSET:
        content = None
    if kind == "counter":
        if content is None:
            return 0
        if isinstance(content, bool) or not isinstance(content, int):
            raise InvalidInput(f"counter content must be an int, got {type(content).__name__}")
        return content
    if kind == "list":
        if content is None:
            return []
        if isinstance(content, (str, bytes)) or not isinstance(content, (list, tuple)):
            raise InvalidInput("list content must be a list of items")
        return list(content)
    if content is None:
        return []
    if not isinstance(content, (list, tuple)):
        raise InvalidInput("conversation content must be a list of {'role', 'text'} messages")
    return [check_message(m) for m in content]


def check_message(message: Any) -> tuple[str, str]:
    if isinstance(message, dict):
        role, text = message.get("role"), message.get("text")
    elif isinstance(message, (list, tuple)) and len(message) == 2:
        role, text = message
    else:
        raise InvalidInput(f"a message is {{'role': str, 'text': str}}, got {message!r}")
    if not isinstance(role, str) or not role or not isinstance(text, str):
        raise InvalidInput(f"a message needs a non-empty string role and a string text, got {message!r}")
    return check_text(role, "a message role"), check_text(text, "a message text")


def check_key(key: object) -> str:
    if not isinstance(key, str) or not key or "#" in key or len(key) > 256:
        raise InvalidInput(f"metadata keys are non-empty strings without '#', got {key!r}")
    return check_text(key, "a metadata key")


def as_read(value: JSONValue, text: str) -> JSONValue:
    """``value`` as it reads back from its canonical JSON ``text``: a plain scalar is itself (JSON
    carries it exactly), anything else is decoded (tuples become lists, keys are sorted)."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    return decode_value(text)


def first_of_each(texts: list[str], values: list[JSONValue]) -> dict[str, JSONValue]:
    """The first value of each canonical text, in order (as an OR-set reads its elements back)."""
    first: dict[str, JSONValue] = {}
    for text, value in zip(texts, values, strict=True):
        first.setdefault(text, value)
    return first


def check_keys(keys: Iterable[object]) -> list[str]:
    """:func:`check_key` of each key, their text checked in one piece (a lone surrogate anywhere
    fails it, and is then found key by key)."""
    checked: list[str] = []
    for key in keys:
        if not isinstance(key, str) or not key or "#" in key or len(key) > 256:
            raise InvalidInput(f"metadata keys are non-empty strings without '#', got {key!r}")
        checked.append(key)
    try:
        "".join(checked).encode("utf-8")
    except UnicodeEncodeError:
        for key in checked:
            check_text(key, "a metadata key")
    return checked


def unique(values: Iterable[JSONValue]) -> list[JSONValue]:
    """``values`` as an OR-set reads them back: canonical JSON, first occurrence of each, in order."""
    seen: dict[str, JSONValue] = {}
    for value in values:
        text = encode_value(value)
        if text not in seen:
            seen[text] = decode_value(text)
    return list(seen.values())
