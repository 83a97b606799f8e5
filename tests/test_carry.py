"""Changes made concurrently with a rebase are carried over onto the new epoch by the replica that
holds them (``crdtmem/document/carry.py``, ``docs/protocol.md`` §7.11): every replica converges, and
no acknowledged write is lost, whichever way the rebase and the change meet."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from crdtmem import EpochMismatch, Replica
from crdtmem.clock import HybridLogicalClock
from crdtmem.document import epoch as epochs
from crdtmem.document.memory import MemoryDoc
from crdtmem.document.records import Scope, Source
from crdtmem.engine import payload as wire
from crdtmem.engine.changes import Dots
from crdtmem.testing import assert_converged
from tests.support.replicas import pull_until_quiet

U1 = "user:u1:memories"
_ticks = itertools.count(1_800_000_000_000)


def _dots(replica: str) -> Dots:
    return Dots(replica, HybridLogicalClock(lambda: next(_ticks)))


def _created(kind: str, content: Any, **extra: Any) -> tuple[MemoryDoc, Dots]:
    doc, dots = MemoryDoc.empty("m1", 1), _dots("a")
    with doc.change():
        doc.create(
            memory_id="m1",
            kind=kind,  # type: ignore[arg-type]
            content=content,
            source=Source(None, None, "u1"),
            scope=Scope("u1", None, (), False),
            metadata=extra.get("metadata", {}),
            tags=extra.get("tags", []),
            next_dot=dots,
        )
    return doc, dots


def _copy(doc: MemoryDoc, client: int) -> MemoryDoc:
    return MemoryDoc.from_state("m1", doc.state(), client)


def _take(doc: MemoryDoc, update: bytes, replica: str) -> MemoryDoc:
    """``doc`` after taking the rebase entry ``update`` as ``replica`` would."""
    incoming = epochs.rebase_epoch(update)
    assert incoming is not None
    doc.adopt_carrying(update, incoming, replica)
    return doc


def _merged(*docs: MemoryDoc) -> list[dict[str, Any]]:
    """Every document after exchanging the others' carried changes: what each replica reads."""
    for doc in docs:
        for other in docs:
            if other.carried is not None and other is not doc:
                doc.apply(other.carried.update)
    return [doc.materialize().to_dict() | {"version": None} for doc in docs]


def test_a_concurrent_fact_update_tag_and_metadata_change_are_carried_and_the_rebasers_kept() -> None:
    a, a_dots = _created("fact", "v0", metadata={"k": 1}, tags=["x", "y"])
    b, b_dots = _copy(a, 2), _dots("b")
    with a.change():  # the rebaser's own change b lacks
        a.update(next_dot=a_dots, metadata={"from_a": True}, add_tags=["from-a"])
    update, _ = epochs.rebuild(a.doc, "m1", "a", "001800000000000.000000")
    with b.change():  # concurrent with the rebase
        b.update(next_dot=b_dots, content="from b", metadata={"k": 2}, add_tags=["from-b"], remove_tags=["x"])
    _take(b, update, "b")
    assert b.carried is not None
    memory = b.materialize()
    assert memory.content == "from b" and memory.metadata == {"k": 2, "from_a": True}
    assert sorted(memory.tags) == ["from-a", "from-b", "y"]
    assert not memory.conflicted, "b observed the value it overwrote"
    rebased = MemoryDoc.from_state("m1", update, 9)
    rebased.apply(b.carried.update)
    assert rebased.materialize().to_dict() == memory.to_dict()


def test_a_concurrent_register_write_stays_a_conflict() -> None:
    a, a_dots = _created("fact", "v0")
    b, b_dots = _copy(a, 2), _dots("b")
    with a.change():
        a.update(next_dot=a_dots, content="from a")
    update, _ = epochs.rebuild(a.doc, "m1", "a", "001800000000000.000000")
    with b.change():
        b.update(next_dot=b_dots, content="from b")
    _take(b, update, "b")
    _, conflicts = b.read()
    assert [c.field for c in conflicts] == ["content"]
    assert {v.value for v in conflicts[0].values} == {"from a", "from b"}


def test_counter_increments_messages_and_a_delete_are_carried() -> None:
    counter, a_dots = _created("counter", 5)
    b = _copy(counter, 2)
    with counter.change():
        counter.increment(next_dot=a_dots, amount=3)
    update, _ = epochs.rebuild(counter.doc, "m1", "a", "001800000000000.000000")
    with b.change():
        b.increment(next_dot=_dots("b"), amount=10)
    assert _take(b, update, "b").materialize().content == 18

    talk, a_dots = _created("conversation", [{"role": "user", "text": "hi"}])
    b, b_dots = _copy(talk, 2), _dots("b")
    with talk.change():
        talk.append_message(next_dot=a_dots, role="assistant", text="from a")
    update, _ = epochs.rebuild(talk.doc, "m1", "a", "001800000000000.000000")
    with b.change():
        b.append_message(next_dot=b_dots, role="user", text="from b 1")
    with b.change():
        b.append_message(next_dot=b_dots, role="user", text="from b 2")
    texts = [m["text"] for m in _take(b, update, "b").materialize().content]
    assert texts == ["hi", "from a", "from b 1", "from b 2"]

    fact, _ = _created("fact", "v0")
    b = _copy(fact, 2)
    update, _ = epochs.rebuild(fact.doc, "m1", "a", "001800000000000.000000")
    with b.change():
        b.delete(next_dot=_dots("b"))
    assert _take(b, update, "b").materialize().deleted


def test_a_replica_carries_only_its_own_entries_and_the_deletions_it_holds() -> None:
    a, _ = _created("list", ["one", "two"])
    b, c = _copy(a, 2), _copy(a, 3)
    update, _ = epochs.rebuild(a.doc, "m1", "a", "001800000000000.000000")
    with b.change():
        b.add_items(next_dot=_dots("b"), items=["from b"])
    c.apply(b.last_delta.update)  # c received b's concurrent add
    with c.change():
        c.remove_items(next_dot=_dots("c"), items=["one"])
    _take(b, update, "b")
    _take(c, update, "c")
    assert c.carried is not None
    first, second = _merged(b, c)
    assert first == second
    assert sorted(first["content"]) == ["from b", "two"], "b's add once, c's remove"


async def _pull(target: Replica, source: Replica) -> None:
    await pull_until_quiet(target, source, [U1])


async def _rewritten(a: Replica, kind: str, content: Any, updates: int = 300) -> str:
    """A memory whose document is mostly tombstones (its metadata rewritten many times)."""
    memory = await a.add(content, kind=kind, user_id="u1", metadata={"n": 0}, tags=["x"])  # type: ignore[arg-type]
    for n in range(updates):
        await a.update(memory.id, metadata={"n": n, "pad": "p" * 20})
    return memory.id


async def test_concurrent_writes_of_every_kind_survive_a_rebase_and_the_fleet_converges(
    tmp_path: Path,
) -> None:
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
        Replica(tmp_path / "c.db", replica_id="c") as c,
    ):
        fact = await _rewritten(a, "fact", "v0")
        counter = await _rewritten(a, "counter", 1)
        talk = await _rewritten(a, "conversation", [{"role": "user", "text": "hi"}])
        gone = await _rewritten(a, "fact", "to delete")
        for replica in (b, c):
            await _pull(replica, a)
            await _pull(a, replica)
        assert (await a.compact()).rebased == 4
        # on the epoch before the rebase, acknowledged at b
        await b.update(fact, content="from b", add_tags=["from-b"], metadata={"k": "b"})
        await b.increment(counter, 41)
        await b.append_message(talk, role="user", text="from b")
        await b.delete(gone)
        await a.update(fact, add_tags=["from-a"])  # on the new epoch, at a
        await _pull(c, b)  # c holds b's old-epoch changes before it sees the rebase
        await _pull(a, b)  # a: old-epoch deltas b's own carry-over will bring, superseded here
        assert (await a.get(fact)).content == "v0"
        await _pull(c, a)
        await _pull(b, a)  # b takes the rebase and carries its changes over
        assert b.trust_status()["carried"] == 4
        for _ in range(2):
            for x, y in itertools.permutations((a, b, c), 2):
                await _pull(x, y)
        assert_converged([a, b, c])
        for replica in (a, b, c):
            assert (await replica.get(fact)).content == "from b"
            assert set((await replica.get(fact)).tags) == {"x", "from-a", "from-b"}
            assert (await replica.get(fact)).metadata["k"] == "b"
            assert (await replica.get(counter)).content == 42
            assert [m["text"] for m in (await replica.get(talk)).content] == ["hi", "from b"]
            assert (await replica.get(gone)).deleted
    async with Replica(tmp_path / "c.db", replica_id="c") as c:  # the carried changes reload
        assert (await c.get(counter)).content == 42
        assert (await c.get(fact)).content == "from b"


async def test_a_replica_behind_the_horizon_carries_its_change_over_a_states_page(tmp_path: Path) -> None:
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
        Replica(tmp_path / "d.db", replica_id="d") as d,
    ):
        memory_id = await _rewritten(a, "fact", "v0")
        await d.apply(await a.export_since([U1], {}, limit=50))  # d holds the first 50 deltas
        await _pull(b, a)
        await _pull(a, b)
        assert (await a.compact()).rebased == 1
        await a.update(memory_id, content="from a, on the new epoch")
        await d.update(memory_id, content="from d", add_tags=["from-d"])  # never saw a's later writes
        await _pull(d, a)  # a states page of the new epoch: d takes it and carries its change over
        assert d.trust_status()["carried"] == 0, "not through a rebase entry"
        memory = await d.get(memory_id)
        assert "from-d" in memory.tags and memory.metadata["n"] == 299
        assert memory.conflicts == ("content",), "d's write and a's are concurrent"
        for x, y in [(a, d), (b, a), (d, a), (b, d)]:
            await _pull(x, y)
        assert_converged([a, b, d])
        assert "from-d" in (await b.get(memory_id)).tags
        conflicted = {v.value for v in (await b.conflicts(memory_id=memory_id))[0].values}
        assert {"from d", "from a, on the new epoch"} <= conflicted


async def test_a_rebase_entry_refused_by_an_earlier_build_is_taken_again_with_the_change_carried(
    tmp_path: Path, monkeypatch: Any
) -> None:
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
    ):
        memory_id = await _rewritten(a, "fact", "v0")
        await _pull(b, a)
        await _pull(a, b)
        assert (await a.compact()).rebased == 1
        await b.update(memory_id, content="from b")

        def refuse(doc: MemoryDoc, update: bytes, incoming: Any, carry_as: str | None) -> None:
            raise EpochMismatch("refused, as builds before carrying over did")

        with monkeypatch.context() as patched:
            patched.setattr(MemoryDoc, "adopt_carrying", refuse)
            stream = wire.decode(await a.export_since([U1], b.version_vectors([U1])))
            assert (await b.apply_payload(stream, isolate=True)).rejected == 1
        assert b.version_vectors([U1])[U1]["a"] == a.version_vectors([U1])[U1]["a"], "decided against"
        assert (await b.get(memory_id)).content == "from b"
        assert await b.reexamine() == 1
        assert b.trust_status()["carried"] == 1
        await _pull(a, b)
        assert_converged([a, b])
        assert (await a.get(memory_id)).content == "from b"
