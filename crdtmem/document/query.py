"""Filters on memory records: mem0's filter grammar, parsed once, with one meaning everywhere.

A filter is a dict (mem0's grammar, ``docs/integrations.md#mem0``)::

    {"user_id": "alice",                                   # plain value: equals
     "category": {"in": ["food", "travel"]},               # any other key: a metadata key
     "priority": {"gte": 5, "lt": 9},                      # several operators: all of them
     "OR": [{"agent_id": "chef"}, {"tags": {"contains": "diet"}}],
     "NOT": [{"status": "archived"}]}                      # none of these

Operators: ``eq``, ``ne``, ``gt``, ``gte``, ``lt``, ``lte``, ``in``, ``nin``, ``contains``,
``icontains`` (ASCII case folding); the value ``"*"`` means the field is present; a list value means
``in``. Sibling keys are ANDed; ``AND``/``OR`` take a list of filters; ``NOT`` takes a list and holds
when none of them does.

Fields: ``id`` (or ``memory_id``), ``user_id``, ``tenant_id``, ``agent_id``, ``run_id`` (or
``session_id``), ``kind``, ``tags``, ``topics`` (or ``topic``), ``created_at``, ``updated_at``;
``metadata.<key>`` or any other name is a metadata key. Where a field holds a list (``tags``, a
metadata list), a test holds when it holds for one element; ``ne`` and ``nin`` are the negations of
``eq`` and ``in`` (so they hold for a memory without the field). Values compare only with values of
their own JSON type: ``1`` never equals ``true`` or ``"1"``; strings order as text (ISO dates do).
``created_at`` and ``updated_at`` take ISO-8601 dates or times (``{"gte": "2024-07-01"}``).

:func:`parse` validates a filter and bounds it (nodes, depth, list sizes); :func:`matches` is the
reference meaning, which the SQLite store compiles to SQL (``store/sqlite_query.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..clock import Hlc
from ..errors import InvalidInput

MAX_NODES = 256
MAX_DEPTH = 8
MAX_LIST = 1000
MAX_TEXT = 1000

COMPARE = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "contains", "icontains")
OPERATORS = (*COMPARE, "exists", "channel")

FIELDS: dict[str, tuple[str, ...]] = {
    "id": ("id",),
    "memory_id": ("id",),
    "user_id": ("scope", "user_id"),
    "tenant_id": ("scope", "tenant_id"),
    "agent_id": ("source", "agent_id"),
    "run_id": ("source", "session_id"),
    "session_id": ("source", "session_id"),
    "kind": ("kind",),
    "tags": ("tags",),
    "topics": ("scope", "topics"),
    "topic": ("scope", "topics"),
    "created_at": ("created_at",),
    "updated_at": ("updated_at",),
}
"""Filter names of a record's own fields: their path in the record's JSON form."""

LOGICAL = ("AND", "OR", "NOT")

Scalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Condition:
    """One test on one field: ``path`` in the record, an operator, its operand."""

    path: tuple[str, ...]
    op: str
    operand: Any = None


@dataclass(frozen=True, slots=True)
class Every:
    parts: tuple[Where, ...]


@dataclass(frozen=True, slots=True)
class Either:
    parts: tuple[Where, ...]


@dataclass(frozen=True, slots=True)
class Neither:
    parts: tuple[Where, ...]


Where = Condition | Every | Either | Neither


def parse(filters: Mapping[str, Any] | None) -> Where | None:
    """The validated form of ``filters`` (None or empty: no condition). Raises InvalidInput naming
    what is wrong."""
    if filters is None:
        return None
    budget = [MAX_NODES]
    where = _parse_mapping(filters, 0, budget, "filters")
    return None if isinstance(where, Every) and not where.parts else where


def field_path(name: str) -> tuple[str, ...]:
    """The record path a filter name addresses (a metadata key unless it names a record field)."""
    if not isinstance(name, str) or not name or len(name) > 256:
        raise InvalidInput(
            f"a filter field must be a non-empty name of at most 256 characters, not {name!r:.60}"
        )
    if name in FIELDS:
        return FIELDS[name]
    key = name[len("metadata.") :] if name.startswith("metadata.") else name
    if not key or '"' in key or "\\" in key or any(ord(c) < 32 for c in key):
        raise InvalidInput(
            f"cannot filter on metadata key {key!r:.60}: quotes, backslashes and control characters"
        )
    return ("metadata", key)


def _parse_mapping(filters: Any, depth: int, budget: list[int], where: str) -> Where:
    if not isinstance(filters, Mapping):
        raise InvalidInput(f"{where} must be an object of field conditions, not {type(filters).__name__}")
    if depth > MAX_DEPTH:
        raise InvalidInput(f"filters nest more than {MAX_DEPTH} levels deep")
    parts: list[Where] = []
    for key, value in filters.items():
        _spend(budget)
        if key in LOGICAL or key in ("$and", "$or", "$not"):
            name = key.strip("$").upper()
            if not isinstance(value, list) or (name != "AND" and not value):
                raise InvalidInput(f"{name} takes a non-empty list of filters")
            subs = tuple(_parse_mapping(v, depth + 1, budget, f"each {name} item") for v in value)
            parts.append(Every(subs) if name == "AND" else Either(subs) if name == "OR" else Neither(subs))
        else:
            parts.extend(_parse_condition(field_path(key), key, value))
    return parts[0] if len(parts) == 1 else Every(tuple(parts))


def _parse_condition(path: tuple[str, ...], key: str, value: Any) -> list[Where]:
    if isinstance(value, Mapping):
        if not value:
            raise InvalidInput(f"filter on {key!r} has no operator; use one of {', '.join(COMPARE)}")
        return [_test(path, key, op, operand) for op, operand in value.items()]
    if value == "*":
        return [Condition(path, "exists")]
    if isinstance(value, list):
        return [_test(path, key, "in", value)]
    return [_test(path, key, "eq", value)]


def _test(path: tuple[str, ...], key: str, op: Any, operand: Any) -> Condition:
    if path in _TIMES and isinstance(operand, str) and op not in ("contains", "icontains"):
        operand = _as_hlc(key, operand)
    elif path in _TIMES and op in ("in", "nin") and isinstance(operand, list):
        operand = [_as_hlc(key, v) if isinstance(v, str) else v for v in operand]
    if op not in COMPARE:
        raise InvalidInput(
            f"unsupported filter operator {op!r:.40} on {key!r}; use one of {', '.join(COMPARE)}"
        )
    if op in ("in", "nin"):
        if not isinstance(operand, list) or len(operand) > MAX_LIST:
            raise InvalidInput(f"{op!r} on {key!r} takes a list of at most {MAX_LIST} values")
        return Condition(path, op, tuple(_scalar(key, v) for v in operand))
    if op in ("contains", "icontains"):
        if not isinstance(operand, str):
            raise InvalidInput(f"{op!r} on {key!r} takes a string")
        return Condition(path, op, _scalar(key, operand))
    if op in ("gt", "gte", "lt", "lte") and (operand is None or isinstance(operand, bool)):
        raise InvalidInput(f"{op!r} on {key!r} takes a number or a string")
    return Condition(path, op, _scalar(key, operand))


_TIMES = (("created_at",), ("updated_at",))


def _as_hlc(key: str, text: str) -> str:
    """An ISO-8601 time or date (UTC unless it says otherwise) as the timestamp form records hold."""
    try:
        Hlc.decode(text)
        return text
    except InvalidInput:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"filter on {key!r} takes an ISO-8601 date or time, not {text!r:.60}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return Hlc(int(when.timestamp() * 1000), 0).encode()


def _scalar(key: str, value: Any) -> Scalar:
    if value is None or isinstance(value, (bool, int, float)):
        if isinstance(value, float) and value != value:
            raise InvalidInput(f"filter on {key!r}: NaN matches nothing")
        return value
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise InvalidInput(f"filter value on {key!r} is longer than {MAX_TEXT} characters")
        return value
    raise InvalidInput(
        f"filter on {key!r} compares with text, numbers, true/false or null, not {type(value).__name__}"
    )


def _spend(budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise InvalidInput(f"filters have more than {MAX_NODES} conditions")


# -- the reference meaning -----------------------------------------------------------------------


def matches(where: Where | None, record: Mapping[str, Any]) -> bool:
    """Whether a record (a memory's JSON form) passes ``where``."""
    if where is None:
        return True
    if isinstance(where, Every):
        return all(matches(w, record) for w in where.parts)
    if isinstance(where, Either):
        return any(matches(w, record) for w in where.parts)
    if isinstance(where, Neither):
        return not any(matches(w, record) for w in where.parts)
    values = _values(record, where.path)
    op = where.op
    if op == "exists":
        return bool(values)
    if op == "channel":
        return any(isinstance(v, str) and channel_matches(where.operand, v) for v in values)
    if op == "ne":
        return not any(_holds("eq", v, where.operand) for v in values)
    if op == "nin":
        return not any(_holds("in", v, where.operand) for v in values)
    return any(_holds(op, v, where.operand) for v in values)


def readable(patterns: Iterable[str]) -> Where | None:
    """Records on at least one channel that one of ``patterns`` (a token's read grants, checked
    already: ``*`` alone, or a channel with ``*`` for whole parts) matches; None for ``*``."""
    grants = tuple(patterns)
    if "*" in grants:
        return None
    return Either(tuple(Condition(("channels",), "channel", p) for p in grants))


def channel_matches(pattern: str, channel: str) -> bool:
    """A grant's meaning (as :func:`crdtmem.access.matches`): a ``*`` id or suffix is any whole one."""
    if pattern == channel:
        return True
    p_parts, c_parts = pattern.split(":"), channel.split(":")
    if len(p_parts) != 3 or len(c_parts) != 3 or p_parts[0] != c_parts[0]:
        return False
    return all(p in ("*", c) and c for p, c in zip(p_parts[1:], c_parts[1:], strict=True))


def _values(record: Mapping[str, Any], path: tuple[str, ...]) -> list[Any]:
    value: Any = record
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return []
        value = value[part]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def json_type(value: Any) -> str:
    """The JSON type a comparison respects: bool, number, text, null or other."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "text" if isinstance(value, str) else "other"


def ascii_lower(text: str) -> str:
    """Lower case for ASCII letters only (what SQLite's lower() does)."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _holds(op: str, value: Any, operand: Any) -> bool:
    if op == "in":
        return any(_holds("eq", value, o) for o in operand)
    kind = json_type(value)
    if op in ("contains", "icontains"):
        if kind != "text":
            return False
        if op == "icontains":
            return ascii_lower(operand) in ascii_lower(value)
        return bool(operand in value)
    if kind != json_type(operand):
        return False
    if op == "eq":
        return bool(value == operand)
    if op == "gt":
        return bool(value > operand)
    if op == "gte":
        return bool(value >= operand)
    if op == "lt":
        return bool(value < operand)
    return bool(value <= operand)  # lte
