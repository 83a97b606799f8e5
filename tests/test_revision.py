"""Revisions: the same merged state gives the same revision on every replica, whatever order its
changes arrived in, and a state that has seen more always has a higher revision."""

from __future__ import annotations

import itertools
import random

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtmem.clock import HybridLogicalClock
from crdtmem.document.memory import MemoryDoc
from crdtmem.document.records import Scope, Source
from crdtmem.document.revision import (
    TIE_BITS,
    decode_delete_set,
    delete_set,
    revision_of,
    revision_of_state,
)
from crdtmem.document.statevector import decode
from crdtmem.engine.changes import Dots
from crdtmem.errors import MalformedPayload

_ticks = itertools.count(1_700_000_000_000)


def _replica(name: str, client_id: int) -> tuple[MemoryDoc, Dots]:
    return MemoryDoc.empty("m1", client_id), Dots(name, HybridLogicalClock(lambda: next(_ticks)))


def _create(doc: MemoryDoc, dots: Dots) -> bytes:
    with doc.change():
        doc.create(
            memory_id="m1",
            kind="list",
            content=["a"],
            source=Source(None, None, "u1"),
            scope=Scope("u1", None, (), False),
            metadata={},
            tags=["t0"],
            next_dot=dots,
        )
    return doc.last_delta.update


OPS = st.sampled_from(["add", "remove", "tag", "untag", "meta", "unmeta"])


def _change(doc: MemoryDoc, dots: Dots, op: str, n: int) -> bytes:
    with doc.change():
        if op == "add":
            doc.add_items([f"i{n % 4}"], dots)
        elif op == "remove":
            doc.remove_items([f"i{n % 4}", "a"], dots)
        elif op == "tag":
            doc.update(next_dot=dots, add_tags=[f"t{n % 3}"])
        elif op == "untag":
            doc.update(next_dot=dots, remove_tags=[f"t{n % 3}"])
        elif op == "meta":
            doc.update(next_dot=dots, metadata={"k": n})
        else:
            doc.update(next_dot=dots, remove_metadata=["k"])
    return doc.last_delta.update


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), OPS), min_size=1, max_size=25), st.randoms())
def test_same_state_same_revision_and_every_change_raises_it(ops, rnd: random.Random) -> None:
    base, base_dots = _replica("a", 1)
    created = _create(base, base_dots)
    replicas = [(base, base_dots)] + [_replica(name, 2 + i) for i, name in enumerate("bc")]
    for doc, _ in replicas[1:]:
        doc.apply(created)
    deltas = [created]
    for n, (who, op) in enumerate(ops):
        doc, dots = replicas[who]
        before_state, before = doc.state(), revision_of(doc.doc)
        deltas.append(_change(doc, dots, op, n))
        after = revision_of(doc.doc)
        if doc.state() != before_state:
            assert after > before, op
        else:
            assert after == before
    # every replica's own state has a revision below the merge of all of them, unless it is the merge
    merged = pycrdt.Doc()
    for delta in deltas:
        merged.apply_update(delta)
    top = revision_of(merged)
    for doc, _ in replicas:
        mine = revision_of(doc.doc)
        same = (doc.state_vector(), delete_set(doc.doc)) == (decode(merged.get_state()), delete_set(merged))
        assert mine < top or same
    # a replica that receives the deltas in another (causal) order reaches the same revision
    shuffled = deltas[1:]
    rnd.shuffle(shuffled)
    other = pycrdt.Doc()
    other.apply_update(created)
    waiting = list(shuffled)
    for _ in range(len(waiting) + 1):  # Yrs holds back what lacks dependencies; retry until done
        for delta in list(waiting):
            other.apply_update(delta)
    for delta in deltas:
        other.apply_update(delta)
    assert revision_of(other) == top
    assert revision_of_state(bytes(merged.get_update())) == top


def test_a_delete_only_change_raises_the_revision() -> None:
    doc = pycrdt.Doc()
    items = doc.get("m", type=pycrdt.Map)
    items["a"] = 1
    items["b"] = 2
    before = revision_of(doc)
    vector_before = doc.get_state()
    del items["a"]
    assert doc.get_state() == vector_before, "a deletion adds no item"
    assert revision_of(doc) > before
    assert sum(length for ranges in delete_set(doc).values() for _, length in ranges) == 1


def test_concurrent_states_order_the_same_way_on_every_node() -> None:
    a, a_dots = _replica("a", 1)
    created = _create(a, a_dots)
    b, b_dots = _replica("b", 2)
    b.apply(created)
    x = _change(a, a_dots, "meta", 1)
    y = _change(b, b_dots, "meta", 2)
    ra, rb = revision_of(a.doc), revision_of(b.doc)
    assert ra >> TIE_BITS == rb >> TIE_BITS, "two single writes over the same base: equal size"
    assert ra != rb, "the digest orders them"
    a.apply(y)
    b.apply(x)
    assert revision_of(a.doc) == revision_of(b.doc) > max(ra, rb)


def test_revisions_stay_exact_as_floats() -> None:
    doc, dots = _replica("a", 1)
    _create(doc, dots)
    for n in range(200):
        _change(doc, dots, "meta", n)
    value = revision_of(doc.doc)
    assert value < 2**53 and float(value) == value


def test_delete_sets_are_canonical() -> None:
    # ranges given out of order, touching and overlapping, under one client listed twice
    raw = bytes([0, 3, 5, 3, 4, 2, 0, 3, 2, 1, 9, 1, 1, 1, 5, 1, 6, 1])
    assert decode_delete_set(raw) == {5: [(0, 3), (4, 3)], 9: [(1, 1)]}
    assert decode_delete_set(bytes([0, 0])) == {}
    for bad in (b"", bytes([1]), bytes([0, 1, 5]), bytes([0, 1, 5, 2, 0]), bytes([0, 0, 7])):
        with pytest.raises(MalformedPayload):
            decode_delete_set(bad)
    with pytest.raises(MalformedPayload):
        revision_of_state(b"\xff\xff")
