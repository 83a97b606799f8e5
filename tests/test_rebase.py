"""Rebasing a memory: its document rebuilt from its live content as a new epoch, without tombstones;
peers take it, and a change made concurrently on the previous epoch is carried over onto the new
one by the replica that made it (``docs/protocol.md`` §7.11; more in ``tests/test_carry.py``)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from crdtmem import EpochMismatch, Replica, UnsupportedVersion
from crdtmem.clock import HybridLogicalClock
from crdtmem.document import epoch as epochs
from crdtmem.document.memory import MemoryDoc
from crdtmem.document.records import Scope, Source
from crdtmem.engine import payload as wire
from crdtmem.engine.causal import apply_causally
from crdtmem.engine.changes import Dots
from crdtmem.store.base import DeltaRecord
from crdtmem.testing import assert_converged
from tests.support.replicas import pull_until_quiet

U1 = "user:u1:memories"
_ticks = itertools.count(1_700_000_000_000)


def _doc(client: int, replica: str) -> tuple[MemoryDoc, Dots]:
    return MemoryDoc.empty("m1", client), Dots(replica, HybridLogicalClock(lambda: next(_ticks)))


def _written() -> tuple[MemoryDoc, MemoryDoc]:
    """Two replicas' copies of a fact updated many times, with concurrent writes left in conflict."""
    phone, dots = _doc(1, "phone")
    with phone.change():
        phone.create(
            memory_id="m1",
            kind="fact",
            content="v0",
            source=Source("agent", None, "u1"),
            scope=Scope("u1", None, ("t1",), False),
            metadata={"confidence": 0.5},
            tags=["a", "b"],
            next_dot=dots,
        )
    for n in range(1000):
        with phone.change():
            phone.update(next_dot=dots, content=f"v{n}", metadata={"n": n})
    laptop, laptop_dots = _doc(2, "laptop")
    laptop.apply(phone.state())
    with phone.change():
        phone.update(next_dot=dots, content="from phone", remove_tags=["a"])
    with laptop.change():
        laptop.update(next_dot=laptop_dots, content="from laptop", metadata={"confidence": 0.9})
    phone.apply(laptop.state())
    return phone, laptop


def test_a_rebuilt_document_reads_as_the_old_one_and_holds_no_tombstones() -> None:
    doc, _ = _written()
    record, conflicts = doc.read()
    assert [c.field for c in conflicts] == ["content"], "the concurrent writes are a conflict"
    update, epoch = epochs.rebuild(doc.doc, "m1", "phone", "001700000000000.000000")
    rebased = MemoryDoc.from_state("m1", update, 9)
    assert rebased.read() == (record, conflicts)  # same values, same siblings, same conflicts
    assert len(update) * 5 < len(doc.state()), (len(update), len(doc.state()))
    assert rebased.epoch == epoch and epoch.n == 1 and epoch.base == doc.doc.get_state()
    assert epochs.is_rebase(epochs.rebase_deps(epoch.client), update)
    assert not epochs.is_rebase(doc.doc.get_state(), update)
    with doc.change():  # an ordinary delta is no rebase entry
        doc.update(next_dot=Dots("phone", HybridLogicalClock(lambda: next(_ticks))), content="x")
    assert not epochs.is_rebase(doc.last_delta.deps, doc.last_delta.update)
    again, second = epochs.rebuild(rebased.doc, "m1", "phone", "001700000000001.000000")
    assert second.n == 2 and second.lineage == ((epoch.client, epoch.base),)
    assert epochs.rebase_epoch(again) == second


def test_a_document_takes_an_epoch_only_if_it_holds_nothing_the_epoch_lacks() -> None:
    phone, laptop = _written()
    update, epoch = epochs.rebuild(phone.doc, "m1", "phone", "001700000000000.000000")
    assert epochs.adoptable(laptop.doc, epoch), "laptop holds a part of what phone held"
    with laptop.change():
        laptop.update(next_dot=Dots("laptop", HybridLogicalClock(lambda: next(_ticks))), content="late")
    late = laptop.last_delta
    assert not epochs.adoptable(laptop.doc, epoch), "a change made after the rebase's base"
    with pytest.raises(EpochMismatch):
        laptop.merge_state(update)
    rebased = MemoryDoc.from_state("m1", update, 9)
    assert not epochs.covered(epoch, late.deps, late.update)
    with pytest.raises(EpochMismatch):
        rebased.merge_state(laptop.state())
    rebased.merge_state(phone.state())  # the state it was built from: nothing new, dropped
    assert rebased.epoch == epoch


async def _pull(target: Replica, source: Replica) -> None:
    await pull_until_quiet(target, source, [U1])


async def _rewritten(a: Replica, updates: int = 400) -> str:
    fact = await a.add("v0", user_id="u1", metadata={"source": "test"}, tags=["x"])
    for n in range(updates):
        await a.update(fact.id, content=f"value {n}")
    return fact.id


async def test_compaction_rebases_a_fact_every_peer_acknowledged_and_peers_take_it(tmp_path: Path) -> None:
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
        Replica(tmp_path / "c.db", replica_id="c") as c,
    ):
        # 800 rewrites: the rebased state is ~700 B whatever the history, ~14 KB before it (at 400 the
        # ratio sat at the bound, 10x, moved by the varying lengths of Yrs client ids)
        memory_id = await _rewritten(a, updates=800)
        await _pull(b, a)
        await _pull(a, b)  # a learns what b holds
        record = await a.get(memory_id)
        before = len(a.store.load_state(memory_id) or b"")
        done = await a.compact()
        assert done.rebased == 1
        after = len(a.store.load_state(memory_id) or b"")
        assert after * 10 < before, (before, after)
        assert (await a.get(memory_id)).content == record.content
        await _pull(b, a)  # b takes the rebase entry: it held nothing the epoch lacks
        assert len(b.store.load_state(memory_id) or b"") == after
        await _pull(c, a)  # c never held the memory: it catches up from a's states
        await b.update(memory_id, content="after the rebase, from b")
        await _pull(a, b)
        await _pull(c, b)
        assert_converged([a, b, c])
        assert (await c.get(memory_id)).content == "after the rebase, from b"
        assert (await a.compact()).rebased == 0, "nothing to gain yet"
    async with Replica(tmp_path / "b.db", replica_id="b") as b:  # the rebased document reloads
        assert (await b.get(memory_id)).content == "after the rebase, from b"
        assert len(b.store.load_state(memory_id) or b"") * 5 < before


async def test_a_change_concurrent_with_a_rebase_is_carried_over_by_the_replica_that_made_it(
    tmp_path: Path,
) -> None:
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
    ):
        memory_id = await _rewritten(a)
        await _pull(b, a)
        await _pull(a, b)
        assert (await a.compact()).rebased == 1
        await b.update(memory_id, content="concurrent, from b")  # on the epoch before the rebase
        # at a, b's old-epoch delta is superseded (decided, never applied): b carries it over
        stream = wire.decode(await b.export_since([U1], a.version_vectors([U1])))
        result = await a.apply_payload(stream, isolate=True)
        assert result.rejected == 0
        assert a.version_vectors([U1])[U1]["b"] == b.version_vectors([U1])[U1]["b"]
        assert (await a.get(memory_id)).content == "value 399"
        await _pull(b, a)  # b takes the epoch and writes its change again on it
        assert (await b.get(memory_id)).content == "concurrent, from b"
        assert b.store.load_state(memory_id) is not None
        await _pull(a, b)
        assert (await a.get(memory_id)).content == "concurrent, from b"
        assert_converged([a, b])


async def test_only_the_creator_rebases_and_only_what_no_peer_holds_more_of(tmp_path: Path) -> None:
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
    ):
        memory_id = await _rewritten(a)
        await _pull(b, a)
        await _pull(a, b)
        assert (await b.compact()).rebased == 0, "b did not create the memory"
        a.acknowledged("b", {U1: {"a": 401, "b": 3}})  # b reports entries a does not hold
        assert (await a.compact()).rebased == 0
        assert a.compaction.status()["rebased"] == 0
        assert (await a.get(memory_id)).content == "value 399"


async def test_a_peer_with_part_of_the_history_takes_the_epoch_and_old_deltas_are_superseded(
    tmp_path: Path,
) -> None:
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
        Replica(tmp_path / "d.db", replica_id="d") as d,
    ):
        memory_id = await _rewritten(a)
        await d.apply(await a.export_since([U1], {}, limit=100))  # d holds the first 100 deltas
        await _pull(b, a)
        await _pull(a, b)
        assert (await a.compact()).rebased == 1
        with pytest.raises(UnsupportedVersion):  # a page a reader of earlier revisions asked for
            a.export_states([U1], version=2)
        await _pull(d, a)  # behind a's horizon: a states page whose rebased state replaces d's copy
        assert (await d.get(memory_id)).content == "value 399"
        rebased = len(d.store.load_state(memory_id) or b"")
        # b's log still holds the old epoch's deltas d never logged: superseded, decided, never applied
        result = await d.apply(await b.export_since([U1], {}))
        assert result.applied == 0 and result.rejected == 0
        assert len(d.store.load_state(memory_id) or b"") == rebased
        assert (await d.get(memory_id)).content == "value 399"
        await d.update(memory_id, content="from d")
        await _pull(a, d)
        await _pull(b, a)
        assert_converged([a, b, d])


def test_causal_delivery_supersedes_an_old_delta_the_epoch_holds_and_refuses_a_concurrent_one() -> None:
    phone, dots = _doc(1, "phone")
    with phone.change():
        phone.create(
            memory_id="m1",
            kind="fact",
            content="v0",
            source=Source(None, None, "u1"),
            scope=Scope("u1", None, (), False),
            metadata={},
            tags=[],
            next_dot=dots,
        )
    old = []
    for n in range(3):
        with phone.change():
            phone.update(next_dot=dots, content=f"v{n}")
        old.append(_record(f"phone:{n}", phone))
    update, epoch = epochs.rebuild(phone.doc, "m1", "phone", "001700000000000.000000")
    entry = DeltaRecord("phone:r", "phone", "m1", "h", epochs.rebase_deps(epoch.client), update, (U1,))
    with phone.change():  # made on the old epoch after the rebase's base: concurrent with it
        phone.update(next_dot=dots, content="late")
    late = _record("phone:late", phone)
    fresh = MemoryDoc.empty("m1", 5)
    applied, waiting, superseded = apply_causally([entry, *old], lambda _: fresh)
    assert [d.uid for d in applied] == ["phone:r", *(d.uid for d in old)] and not waiting
    assert superseded == old and fresh.epoch == epoch
    assert fresh.materialize().content == "v2"
    with pytest.raises(EpochMismatch):
        apply_causally([late], lambda _: fresh)
    state = fresh.doc.get_state()
    applied, waiting, superseded = apply_causally([entry], lambda _: fresh)
    assert applied == [entry] and not superseded, "the entry of the epoch held: logged, a duplicate"
    assert fresh.doc.get_state() == state and fresh.epoch == epoch
    update2, epoch2 = epochs.rebuild(fresh.doc, "m1", "phone", "001700000000001.000000")
    entry2 = DeltaRecord("phone:r2", "phone", "m1", "h", epochs.rebase_deps(epoch2.client), update2, (U1,))
    later = MemoryDoc.empty("m1", 6)
    assert apply_causally([entry2], lambda _: later)[0] == [entry2] and later.epoch == epoch2
    assert apply_causally([entry], lambda _: later)[2] == [entry], "an earlier epoch's entry"


def _record(uid: str, doc: MemoryDoc) -> DeltaRecord:
    return DeltaRecord(uid, "phone", "m1", "h", doc.last_delta.deps, doc.last_delta.update, (U1,))
