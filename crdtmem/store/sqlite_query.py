"""A record filter (``document/query.py``) as an SQL condition on the ``docs`` table.

Every test reads the record's JSON with ``json_each(record, path)``, which yields one row for a
single value and one per element for a list: a test holds when it holds for one row, as
:func:`~crdtmem.document.query.matches` defines. Equality on ``id``, ``user_id``, ``tenant_id`` and
``kind`` uses the columns instead, so SQLite can use their indexes.
"""

from __future__ import annotations

from typing import Any

from ..document.query import Condition, Either, Every, Neither, Where, json_type

_COLUMNS = {
    ("id",): "d.id",
    ("scope", "user_id"): "d.user_id",
    ("scope", "tenant_id"): "d.tenant_id",
    ("kind",): "d.kind",
}

_TYPES = {
    "null": "e.type = 'null'",
    "bool": "e.type IN ('true', 'false')",
    "number": "e.type IN ('integer', 'real')",
    "text": "e.type = 'text'",
}

_OPS = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def to_sql(where: Where) -> tuple[str, list[Any]]:
    """``(condition, args)`` meaning ``where`` for rows of ``docs`` aliased ``d``."""
    args: list[Any] = []
    return _node(where, args), args


def _node(where: Where, args: list[Any]) -> str:
    if isinstance(where, (Every, Either)):
        if not where.parts:
            return "1" if isinstance(where, Every) else "0"
        joiner = " AND " if isinstance(where, Every) else " OR "
        return "(" + joiner.join(_node(w, args) for w in where.parts) + ")"
    if isinstance(where, Neither):
        return "NOT (" + " OR ".join(_node(w, args) for w in where.parts) + ")"
    return _test(where, args)


def _test(test: Condition, args: list[Any]) -> str:
    column = _COLUMNS.get(test.path)
    if column is not None and test.op == "eq" and isinstance(test.operand, str):
        args.append(test.operand)
        return f"{column} IS ?"  # IS: a NULL column is a plain no (= gives NULL, which NOT keeps NULL)
    if test.op in ("ne", "nin"):
        positive = Condition(test.path, "eq" if test.op == "ne" else "in", test.operand)
        return f"NOT coalesce({_test(positive, args)}, 0)"  # a NULL column is no match of eq
    args.append("$" + "".join('."' + part + '"' for part in test.path))
    if test.op == "exists":
        return "EXISTS (SELECT 1 FROM json_each(d.record, ?) e)"
    if test.op == "channel":
        args.append(_glob(test.operand))
        return "EXISTS (SELECT 1 FROM json_each(d.record, ?) e WHERE e.type = 'text' AND e.value GLOB ?)"
    return f"EXISTS (SELECT 1 FROM json_each(d.record, ?) e WHERE {_element(test.op, test.operand, args)})"


def _element(op: str, operand: Any, args: list[Any]) -> str:
    if op == "in":
        return "(" + " OR ".join(_element("eq", o, args) for o in operand) + ")" if operand else "0"
    if op in ("contains", "icontains"):
        args.append(operand)
        if op == "icontains":
            return "e.type = 'text' AND instr(lower(e.value), lower(?)) > 0"
        return "e.type = 'text' AND instr(e.value, ?) > 0"
    kind = json_type(operand)
    if kind == "null":
        return _TYPES["null"]
    if kind == "bool":
        return "e.type = 'true'" if operand else "e.type = 'false'"
    args.append(operand)
    return f"{_TYPES[kind]} AND e.value {_OPS[op]} ?"


def _glob(pattern: str) -> str:
    """A channel grant as a GLOB: ``*`` parts stay wildcards (ids never hold ``:``, they are escaped),
    GLOB's other special characters in ids are matched as themselves."""
    parts = pattern.split(":")
    return ":".join(
        p if p == "*" else p.replace("[", "[[]").replace("?", "[?]").replace("*", "[*]") for p in parts
    )
