"""Record filters (mem0's grammar): parsing, the reference meaning, and SQLite's translation of it,
which must agree with the reference on every record and filter."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtmem.clock import Hlc
from crdtmem.document.query import Condition, Either, Every, Neither, matches, parse
from crdtmem.errors import InvalidInput
from crdtmem.store.sqlite_query import to_sql


def record(
    memory_id: str = "m1",
    *,
    user_id: str | None = "alice",
    agent_id: str | None = None,
    run_id: str | None = None,
    kind: str = "fact",
    tags: list[Any] | None = None,
    metadata: dict[str, Any] | None = None,
    created_ms: int = 1_700_000_000_000,
) -> dict[str, Any]:
    stamp = Hlc(created_ms, 0).encode()
    return {
        "id": memory_id,
        "kind": kind,
        "content": "text",
        "metadata": metadata or {},
        "tags": tags or [],
        "source": {"agent_id": agent_id, "session_id": run_id, "user_id": user_id},
        "scope": {"user_id": user_id, "tenant_id": None, "topics": [], "shared": False},
        "created_at": stamp,
        "updated_at": stamp,
    }


def sql_matches(where: Any, records: list[dict[str, Any]]) -> list[str]:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE docs (id TEXT, user_id TEXT, tenant_id TEXT, kind TEXT, record TEXT)")
    for r in records:
        db.execute(
            "INSERT INTO docs VALUES (?, ?, ?, ?, ?)",
            (r["id"], r["scope"]["user_id"], r["scope"]["tenant_id"], r["kind"], json.dumps(r)),
        )
    condition, args = to_sql(where)
    return [row[0] for row in db.execute(f"SELECT d.id FROM docs d WHERE {condition} ORDER BY d.id", args)]


def test_mem0_documented_forms_parse() -> None:
    assert parse({"user_id": "alice"}) == Condition(("scope", "user_id"), "eq", "alice")
    assert parse({"user_id": "alice", "category": "work"}) == Every(
        (Condition(("scope", "user_id"), "eq", "alice"), Condition(("metadata", "category"), "eq", "work"))
    )
    where = parse({"OR": [{"category": "urgent"}, {"priority": {"gte": 9}}], "NOT": [{"status": "deleted"}]})
    assert where == Every(
        (
            Either(
                (
                    Condition(("metadata", "category"), "eq", "urgent"),
                    Condition(("metadata", "priority"), "gte", 9),
                )
            ),
            Neither((Condition(("metadata", "status"), "eq", "deleted"),)),
        )
    )
    assert (
        parse({"run_id": "s1"})
        == parse({"session_id": "s1"})
        == Condition(("source", "session_id"), "eq", "s1")
    )
    assert parse({"category": "*"}) == Condition(("metadata", "category"), "exists")
    assert parse({"category": ["a", "b"]}) == Condition(("metadata", "category"), "in", ("a", "b"))
    assert parse({"metadata.user_id": "x"}) == Condition(("metadata", "user_id"), "eq", "x")
    assert parse({}) is None and parse(None) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"user_id": {"unknown": "value"}},
        {"x": {}},
        {"AND": {"a": 1}},
        {"OR": []},
        {"x": {"in": "abc"}},
        {"x": {"gt": None}},
        {"x": {"contains": 3}},
        {"x": {"eq": {"nested": 1}}},
        {'we"ird': 1},
        {"created_at": {"gte": "yesterday"}},
        [("user_id", "alice")],
    ],
)
def test_bad_filters_are_clear_errors(bad: Any) -> None:
    with pytest.raises(InvalidInput):
        parse(bad)


def test_filters_are_bounded() -> None:
    deep: dict[str, Any] = {"a": 1}
    for _ in range(20):
        deep = {"AND": [deep]}
    with pytest.raises(InvalidInput, match="levels"):
        parse(deep)
    with pytest.raises(InvalidInput, match="conditions"):
        parse({f"k{i}": i for i in range(300)})
    with pytest.raises(InvalidInput, match="at most"):
        parse({"x": {"in": list(range(1001))}})


def test_meaning_of_each_operator() -> None:
    r = record(
        tags=["urgent", "work"], metadata={"priority": 7, "title": "Team Meeting", "done": False, "n": None}
    )
    yes = [
        {"user_id": "alice"},
        {"priority": {"gte": 7, "lt": 8}},
        {"priority": {"in": [1, 7]}},
        {"priority": {"nin": [1, 2]}},
        {"priority": {"ne": "7"}},  # a number is never text
        {"title": {"contains": "Meet"}},
        {"title": {"icontains": "team meeting"}},
        {"tags": "work"},
        {"tags": {"contains": "urg"}},
        {"done": False},
        {"n": None},
        {"n": "*"},
        {"status": {"ne": "archived"}},  # no status: not archived
        {"created_at": {"gte": "2023-11-14", "lt": "2023-11-15T00:00:00Z"}},
        {"NOT": [{"priority": 1}, {"title": "x"}]},
        {"OR": [{"priority": 1}, {"AND": [{"tags": "work"}, {"done": False}]}]},
    ]
    no = [
        {"user_id": "bob"},
        {"priority": {"gt": 7}},
        {"priority": True},
        {"title": {"contains": "meeting"}},
        {"tags": {"nin": ["work"]}},
        {"status": "*"},
        {"done": 0},
        {"agent_id": "chef"},
        {"NOT": [{"priority": 7}]},
        {"created_at": {"gt": "2024-01-01"}},
    ]
    for f in yes:
        assert matches(parse(f), r), f
        assert sql_matches(parse(f), [r]) == ["m1"], f
    for f in no:
        assert not matches(parse(f), r), f
        assert sql_matches(parse(f), [r]) == [], f


def test_ne_holds_for_a_memory_without_a_user() -> None:
    r = record(user_id=None, agent_id="chef")
    where = parse({"user_id": {"ne": "alice"}})
    assert matches(where, r)
    assert sql_matches(where, [r]) == ["m1"]


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.sampled_from([0.5, 2.0]),
    st.sampled_from(["a", "b", "A", "ab", ""]),
)
_fields = st.sampled_from(["user_id", "agent_id", "run_id", "kind", "tags", "x", "y"])


def _condition() -> st.SearchStrategy[Any]:
    ops = st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "contains", "icontains"])

    def operand(op: str) -> st.SearchStrategy[Any]:
        if op in ("in", "nin"):
            return st.lists(_values, max_size=3)
        if op in ("contains", "icontains"):
            return st.sampled_from(["a", "B", "", "ab"])
        if op in ("gt", "gte", "lt", "lte"):
            return st.one_of(st.integers(-3, 3), st.sampled_from(["a", "b"]))
        return _values

    leaf = st.one_of(
        st.builds(lambda f, v: {f: v}, _fields, _values),
        st.builds(lambda f: {f: "*"}, _fields),
        ops.flatmap(lambda op: st.builds(lambda f, v: {f: {op: v}}, _fields, operand(op))),
    )
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.builds(lambda xs: {"AND": xs}, st.lists(inner, max_size=3)),
            st.builds(lambda xs: {"OR": xs}, st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda xs: {"NOT": xs}, st.lists(inner, min_size=1, max_size=2)),
        ),
        max_leaves=6,
    )


_records = st.lists(
    st.builds(
        lambda user, agent, run, kind, tags, x, y: record(
            user_id=user,
            agent_id=agent,
            run_id=run,
            kind=kind,
            tags=tags,
            metadata={k: v for k, v in (("x", x), ("y", y)) if v != "missing"},
        ),
        st.sampled_from([None, "a", "b"]),
        st.sampled_from([None, "a", "b"]),
        st.sampled_from([None, "a"]),
        st.sampled_from(["fact", "preference"]),
        st.lists(_values, max_size=2),
        st.one_of(_values, st.just("missing"), st.lists(_values, max_size=2)),
        st.one_of(_values, st.just("missing")),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(_condition(), _records)
def test_sqlite_agrees_with_the_reference(filters: dict[str, Any], records: list[dict[str, Any]]) -> None:
    for n, r in enumerate(records):
        r["id"] = f"m{n}"
    where = parse(filters)
    expected = sorted(r["id"] for r in records if matches(where, r))
    got = sql_matches(where, records) if where is not None else sorted(r["id"] for r in records)
    assert got == expected


def test_not_on_an_indexed_column_keeps_the_records_without_it() -> None:
    records = [record(user_id=None), record(user_id="a"), record(user_id="b")]
    for n, r in enumerate(records):
        r["id"] = f"m{n}"
    where = parse({"NOT": [{"user_id": "a"}]})
    assert sql_matches(where, records) == ["m0", "m2"]
    assert sorted(r["id"] for r in records if matches(where, r)) == ["m0", "m2"]
