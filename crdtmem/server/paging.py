"""Pages of REST lists: every list answers ``{<items>, count, total, next_cursor}``.

A cursor is opaque to clients (pass back what ``next_cursor`` said; ``null`` means the last page).
Memories page by version (``v<version>``: the memories changed before that one, so a memory
changed while a client pages moves to the first page instead of showing twice); history, conflicts
and search results page by position (``o<offset>``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInput

_CURSOR = re.compile(r"([vo])([0-9]{1,18})")
MAX_FILTERS_BYTES = 16_384


def version_cursor(query: Mapping[str, str]) -> int | None:
    """The version a memories cursor points before, or None for the first page."""
    return _cursor(query, "v")


def offset_cursor(query: Mapping[str, str]) -> int:
    """The position an offset cursor points at (0 for the first page)."""
    return _cursor(query, "o") or 0


def _cursor(query: Mapping[str, str], kind: str) -> int | None:
    text = query.get("cursor")
    if text is None:
        return None
    match = _CURSOR.fullmatch(text)
    if match is None or match.group(1) != kind:
        raise InvalidInput(f"cursor {text!r:.40} is not one this list gave out; pass back its next_cursor")
    return int(match.group(2))


def filters_param(query: Mapping[str, str]) -> dict[str, Any] | None:
    """The ``filters`` query parameter: a JSON object in mem0's filter grammar."""
    text = query.get("filters")
    if text is None:
        return None
    if len(text.encode()) > MAX_FILTERS_BYTES:
        raise InvalidInput(f"'filters' is longer than {MAX_FILTERS_BYTES} bytes")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise InvalidInput("'filters' must be a JSON object (mem0's filter grammar)") from None
    if not isinstance(value, dict):
        raise InvalidInput("'filters' must be a JSON object (mem0's filter grammar)")
    return value


def page(name: str, items: list[Any], total: int, next_cursor: str | None) -> dict[str, Any]:
    return {name: items, "count": len(items), "total": total, "next_cursor": next_cursor}
