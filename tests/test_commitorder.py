"""The commit order policy: small units go ahead of large ones, without reordering dependent units."""

from __future__ import annotations

from crdtmem.engine.commitorder import UnitShape, is_large, next_group, shape_of
from crdtmem.store.base import Commit, DeltaRecord, PendingDelta, Snapshot


def small(*keys: str) -> UnitShape:
    return UnitShape(False, frozenset(keys))


def large(*keys: str) -> UnitShape:
    return UnitShape(True, frozenset(keys))


BARRIER = UnitShape(False, None)


def test_small_units_overtake_large_ones_and_form_one_group() -> None:
    queued = [large("doc:a"), large("doc:b"), small("doc:c"), small("doc:d")]
    assert next_group(queued, 512, overtook=False) == ([2, 3], True)


def test_after_an_overtaking_group_the_oldest_large_unit_goes_next_alone() -> None:
    queued = [large("doc:a"), large("doc:b"), small("doc:e")]
    assert next_group(queued, 512, overtook=True) == ([0], False)
    assert next_group(queued[1:], 512, overtook=False) == ([1], True)


def test_large_units_commit_one_at_a_time_in_queue_order() -> None:
    queued = [large("doc:a"), large("doc:b")]
    assert next_group(queued, 512, overtook=False) == ([0], False)
    assert next_group(queued[1:], 512, overtook=False) == ([0], False)


def test_in_queue_order_small_units_group_as_before() -> None:
    queued = [small("doc:a"), small("doc:b"), small("doc:c")]
    assert next_group(queued, 512, overtook=False) == ([0, 1, 2], False)
    assert next_group(queued, 2, overtook=False) == ([0, 1], False)


def test_a_small_unit_never_passes_a_unit_of_the_same_memory() -> None:
    queued = [large("doc:a"), small("doc:a"), small("doc:b")]
    assert next_group(queued, 512, overtook=False) == ([2], True)


def test_a_unit_left_behind_holds_back_the_units_it_shares_keys_with() -> None:
    # the second unit stays behind the first (same memory), so the third (same delta) stays too
    queued = [large("doc:a"), small("doc:a", "uid:1"), small("doc:c", "uid:1"), small("doc:d")]
    assert next_group(queued, 512, overtook=False) == ([3], True)


def test_nothing_passes_a_barrier_and_a_barrier_passes_nothing() -> None:
    assert next_group([large("doc:a"), BARRIER, small("doc:b")], 512, overtook=False) == ([0], False)
    assert next_group([BARRIER, small("doc:b")], 512, overtook=False) == ([0], False)
    assert next_group([small("doc:b"), BARRIER, small("doc:c")], 512, overtook=False) == ([0], False)
    assert next_group([large("doc:a"), UnitShape(True, None)], 512, overtook=False) == ([0], False)


def test_a_large_head_without_small_units_behind_goes_alone() -> None:
    assert next_group([large("doc:a"), large("doc:b")], 512, overtook=False) == ([0], False)


def _delta(uid: str, doc_id: str, size: int = 10) -> DeltaRecord:
    return DeltaRecord(
        uid=uid, origin="o", doc_id=doc_id, hlc="", deps=b"", update=b"x" * size, channels=("c",), seqs={}
    )


def test_a_units_shape_names_its_memories_and_deltas() -> None:
    work = Commit(
        deltas=[_delta("1", "a")],
        pending_add=[PendingDelta(_delta("2", "b"), "s", 0)],
        pending_drop=["3"],
        snapshots=[Snapshot("c", b"", 0)],
        stale=["d"],
    )
    shape = shape_of(work)
    assert shape.keys == {"doc:a", "uid:1", "doc:b", "uid:2", "uid:3", "doc:c", "doc:d"}
    assert not shape.large


def test_erasures_folds_and_decisions_are_barriers() -> None:
    assert shape_of(Commit(erase=["a"])).keys is None
    assert shape_of(Commit(fold={"c": {"o": 1}})).keys is None
    assert shape_of(Commit(covers={"c": {"o": 1}})).keys is None


def test_a_unit_is_large_over_32_rows_or_64_kib() -> None:
    assert not is_large(Commit(deltas=[_delta(str(i), "a") for i in range(32)]))
    assert is_large(Commit(deltas=[_delta(str(i), "a") for i in range(33)]))
    assert not is_large(Commit(deltas=[_delta("1", "a", 64 * 1024)]))
    assert is_large(Commit(deltas=[_delta("1", "a", 64 * 1024 + 1)]))
