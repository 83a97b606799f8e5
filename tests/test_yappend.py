"""Appending after the array's known last item (``document/yappend.py``) writes the same items as
Yrs' insert by index, and never appends before an element merged in since."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdtmem.document import ystructs
from crdtmem.document.yappend import update_after
from crdtmem.document.yroots import YArray, YDoc, YMap

_text = st.text(max_size=20)
_values = st.recursive(
    st.none() | st.booleans() | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)


def _items(doc: YDoc) -> list[tuple[object, ...]]:
    structs = ystructs.decode(doc.get_update())
    return [
        (i.client, i.clock, i.length, i.origin, i.right, i.root, i.key, i.values, i.deleted)
        for client in sorted(structs.items)
        for i in structs.items[client]
    ]


def _writes(doc: YDoc, values: list[object], interleave: bool) -> YArray:
    array, lifecycle = YArray(doc, "messages"), YMap(doc, "lifecycle")
    for n, value in enumerate(values):
        with doc.transaction():
            array.append(value)
            if interleave:  # what every write of a memory does: its items cannot be squashed
                lifecycle["a"] = {"v": "active", "n": str(n)}
    return array


@settings(max_examples=100, deadline=None)
@given(st.lists(_values, min_size=1, max_size=8), st.booleans())
def test_appends_after_the_tail_write_the_items_an_insert_by_index_writes(values, interleave):
    by_index = YDoc(client_id=5)
    by_index_array = YArray(by_index, "messages")
    by_index_map = YMap(by_index, "lifecycle")
    for n, value in enumerate(values):
        with by_index.transaction() as txn:  # Yrs' own insert at the end, every time
            by_index_array._array(txn).insert(txn, by_index_array._array(txn).len(txn), value)
            if interleave:
                by_index_map["a"] = {"v": "active", "n": str(n)}
    after_tail = YDoc(client_id=5)
    array = _writes(after_tail, values, interleave)
    assert array.to_py() == by_index_array.to_py() == values
    assert _items(after_tail) == _items(by_index)


def test_values_it_cannot_encode_exactly_are_left_to_yrs() -> None:
    for value in (1, 2.5, 2**60, {"n": 1}, [1], {1: "x"}, b"bytes"):
        assert update_after((1, 0), 1, 1, value) is None
    doc = YDoc(client_id=3)
    array = _writes(doc, ["a", {"n": 1}, "b", 7], interleave=True)
    assert array.to_py() == ["a", {"n": 1.0}, "b", 7.0]


@pytest.mark.parametrize("mine, theirs", [(1, 2), (2, 1)])
def test_an_append_after_a_merge_goes_after_what_was_merged(mine: int, theirs: int) -> None:
    """Yrs orders two items with the same left origin by client id: an append that named a stale
    last item would land before a smaller or larger client's merged element, depending on ids."""
    a, b = YDoc(client_id=mine), YDoc(client_id=theirs)
    on_a = _writes(a, ["a1", "a2"], interleave=True)
    b.apply_update(a.get_update())
    on_b = _writes(b, ["b1"], interleave=True)
    a.apply_update(b.get_update(a.get_state()))
    with a.transaction():
        on_a.append("a3")
        YMap(a, "lifecycle")["a"] = {"v": "active"}
    on_a.append("a4")
    b.apply_update(a.get_update(b.get_state()))
    assert on_a.to_py() == on_b.to_py() == ["a1", "a2", "b1", "a3", "a4"]


def test_concurrent_appends_converge_and_later_appends_stay_at_the_end() -> None:
    a, b = YDoc(client_id=1), YDoc(client_id=2)
    on_a = _writes(a, ["a1"], interleave=True)
    on_b = YArray(b, "messages")
    b.apply_update(a.get_update())
    for n in range(3):  # both append before seeing each other's append, then merge
        on_a.append(f"a{n + 2}")
        on_b.append(f"b{n + 2}")
        seen_a, seen_b = a.get_state(), b.get_state()
        a.apply_update(b.get_update(seen_a))
        b.apply_update(a.get_update(seen_b))
        assert on_a.to_py() == on_b.to_py()
    on_a.append("last")
    b.apply_update(a.get_update(b.get_state()))
    assert on_a.to_py() == on_b.to_py() and on_b.to_py()[-1] == "last"


def test_an_append_after_its_own_removal_of_the_tail_is_still_last() -> None:
    doc = YDoc(client_id=4)
    array = _writes(doc, ["x", "y"], interleave=True)
    array.remove(1)
    array.append("z")
    array.clear()
    array.append("only")
    assert array.to_py() == ["only"]
