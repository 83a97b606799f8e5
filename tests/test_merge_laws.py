"""Merge laws of every CRDT in a memory document, checked on real histories.

For each CRDT type (register with concurrent writes, add-wins OR-set, PN-counter, conversation,
metadata registers, tags OR-set, lifecycle delete-vs-update), hypothesis draws a history: a few
writer replicas make random writes to one shared memory and sync partially in between. From it:

- merging the writers' Yrs states is commutative, associative and idempotent;
- merging a delta (``get_update(state vector)``) equals merging the full state, and replaying every
  change's delta in commit order (with duplicates) equals merging every final state;
- ``export_since``/``apply`` round-trips a replica exactly;
- N fresh replicas fed every change's payload in different orders, with duplicates, converge to the
  same materialized state and the same conflict sets as the writers, with nothing left pending, and
  hold exactly what the acknowledged writes imply (add-wins, concurrent values kept, sums exact).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crdtmem import MemoryDeleted, MemoryExists, NoSuchConflict, Replica
from crdtmem.document.memory import MemoryDoc
from crdtmem.document.records import Kind
from crdtmem.engine import payload as wire
from crdtmem.testing import AcknowledgedWrites, assert_acknowledged_present, assert_converged, canonical_state
from crdtmem.testing.strategies import (
    AddItems,
    AppendMessage,
    Delete,
    Increment,
    MemorySpec,
    Operation,
    RemoveItems,
    Resolve,
    Revive,
    Update,
)

T = TypeVar("T")
CHANNEL = "user:u1:memories"
MEMORY_ID = "m"
CLOCK_MS = 1_700_000_000_000

LAWS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Small value pools, so that concurrent writes collide on the same values and keys.
_values = st.sampled_from(["red", "green", "blue"])
_keys = st.sampled_from(["lang", "tone"])
_items = st.sampled_from(["milk", "eggs", "bread", 7])
_texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=5)  # lone surrogates are not UTF-8
# JSON values as fact content; the two objects are one value (canonical comparison), 3 and 3.0 are not
_json = st.sampled_from([{"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}, [1, "x"], 3, 3.0, True, None, "red"])


@dataclass(frozen=True)
class CrdtCase:
    """One CRDT type: the memory it lives in and the writes that exercise it."""

    kind: Kind
    content: Any
    operations: st.SearchStrategy[Operation]


CASES: dict[str, CrdtCase] = {
    "register": CrdtCase("fact", "initial", st.builds(lambda v: Update(content=v), _values)),
    "orset": CrdtCase(
        "list",
        ["milk"],
        st.one_of(
            st.builds(lambda x: AddItems((x,)), _items),
            st.builds(lambda x: RemoveItems((x,)), _items),
        ),
    ),
    "counter": CrdtCase("counter", 5, st.builds(Increment, st.integers(-20, 20))),
    "conversation": CrdtCase(
        "conversation",
        [{"role": "user", "text": "hi"}],
        st.builds(AppendMessage, st.sampled_from(["user", "assistant"]), _values),
    ),
    "metadata": CrdtCase(
        "fact",
        "initial",
        st.one_of(
            st.builds(lambda k, v: Update(metadata={k: v}), _keys, _values),
            st.builds(lambda k: Update(remove_metadata=(k,)), _keys),
        ),
    ),
    "tags": CrdtCase(
        "fact",
        "initial",
        st.one_of(
            st.builds(lambda t: Update(add_tags=(t,)), _values),
            st.builds(lambda t: Update(remove_tags=(t,)), _values),
        ),
    ),
    "json-register": CrdtCase("fact", {"a": 0}, st.builds(lambda v: Update(content=v), _json)),
    "revival": CrdtCase(
        "fact",
        "initial",
        st.one_of(
            st.just(Delete()),
            st.builds(lambda v, t: Update(content=v, add_tags=(t,)), _values, _values),
            st.builds(lambda v, k, t: Revive("fact", v, {k: v}, (t,)), _json, _keys, _values),
        ),
    ),
    "revival-list": CrdtCase(
        "list",
        ["milk"],
        st.one_of(
            st.just(Delete()),
            st.builds(lambda x: AddItems((x,)), _items),
            st.builds(lambda x: RemoveItems((x,)), _items),
            st.builds(lambda x: Revive("list", [x]), _items),
        ),
    ),
    "revival-counter": CrdtCase(
        "counter",
        5,
        st.one_of(
            st.just(Delete()),
            st.builds(Increment, st.integers(-20, 20)),
            st.builds(lambda n: Revive("counter", n), st.integers(-20, 20)),
        ),
    ),
    "revival-conversation": CrdtCase(
        "conversation",
        [{"role": "user", "text": "hi"}],
        st.one_of(
            st.just(Delete()),
            st.builds(AppendMessage, st.just("user"), _values),
            st.builds(lambda t: Revive("conversation", [{"role": "assistant", "text": t}]), _values),
        ),
    ),
    "lifecycle": CrdtCase(
        "fact",
        "initial",
        st.one_of(
            st.just(Delete()),
            st.builds(lambda v: Update(content=v), _values),
            st.builds(lambda v: Resolve("lifecycle", v), st.sampled_from(["active", "deleted"])),
        ),
    ),
}


@dataclass(frozen=True)
class Write:
    writer: int
    op: Operation


@dataclass(frozen=True)
class Sync:
    source: int
    target: int


Step = Write | Sync


def histories(case: CrdtCase, writers: int = 3) -> st.SearchStrategy[list[Step]]:
    index = st.integers(0, writers - 1)
    step = st.one_of(
        st.builds(Write, index, case.operations),
        st.builds(Write, index, case.operations),
        st.builds(Sync, index, index),
    )
    return st.lists(step, min_size=1, max_size=14)


@dataclass
class History:
    """What a played history leaves behind."""

    states: list[bytes]
    """Each writer's Yrs state of the memory before the final sync."""
    payloads: list[bytes]
    """One single-delta payload per acknowledged write, in commit order."""
    changes: list[bytes]
    """The Yrs update of each acknowledged write, in commit order."""
    final: dict[str, str]
    """The writers' canonical state after a full sync."""
    acked: AcknowledgedWrites


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _replica(name: str) -> Replica:
    return Replica(None, replica_id=name, wall_clock=lambda: CLOCK_MS)


async def _pull(source: Replica, target: Replica) -> None:
    await target.apply(await source.export_since(CHANNEL, target.version_vector(CHANNEL)))


async def _sync_all(replicas: Sequence[Replica]) -> None:
    while True:
        before = [r.version_vectors() for r in replicas]
        for source in replicas:
            for target in replicas:
                if source is not target:
                    await _pull(source, target)
        if [r.version_vectors() for r in replicas] == before:
            return


async def play(case: CrdtCase, steps: Sequence[Step], writers: int = 3) -> History:
    """Create the memory on writer 0, share it, then run ``steps``; record everything."""
    acked = AcknowledgedWrites()
    payloads: list[bytes] = []
    changes: list[bytes] = []
    replicas = [_replica(f"w{i}") for i in range(writers)]
    for replica in replicas:
        await replica.start()
    try:

        async def record(replica: Replica, write: Callable[[], Coroutine[Any, Any, Any]]) -> None:
            vector, before = replica.version_vector(CHANNEL), len(replica.store.history(MEMORY_ID))
            try:
                await write()
            except (MemoryDeleted, MemoryExists, NoSuchConflict):
                return
            history = replica.store.history(MEMORY_ID)
            if len(history) == before:
                return
            changes.append(history[-1].update)
            payloads.append(await replica.export_since(CHANNEL, vector))
            assert len(wire.decode(payloads[-1]).deltas) == 1

        spec = MemorySpec(case.kind, case.content, user_id="u1")
        await record(replicas[0], lambda: acked.create(replicas[0], spec, MEMORY_ID))
        for replica in replicas[1:]:
            await _pull(replicas[0], replica)
        for step in steps:
            if isinstance(step, Sync):
                if step.source != step.target:
                    await _pull(replicas[step.source], replicas[step.target])
                continue
            writer = replicas[step.writer]
            await record(writer, lambda writer=writer, op=step.op: acked.run(writer, MEMORY_ID, op))
        states = [r.store.load_state(MEMORY_ID) or b"" for r in replicas]
        await _sync_all(replicas)
        assert_converged(replicas)
        for replica in replicas:
            assert_acknowledged_present(replica, acked)
        return History(states, payloads, changes, canonical_state(replicas[0]), acked)
    finally:
        for replica in replicas:
            await replica.stop()


# -- Yrs-level laws -------------------------------------------------------------------------------


def view(*updates: bytes) -> str:
    """Canonical materialized state (record, conflict sets, state vector) of the merged updates."""
    doc = MemoryDoc.empty(MEMORY_ID, 1)
    for update in updates:
        doc.apply(update)
    record = {k: v for k, v in doc.materialize().to_dict().items() if k != "version"}
    record["conflict_sets"] = [c.to_dict() for c in doc.conflicts()]
    return json.dumps(
        {"record": record, "state_vector": sorted(doc.state_vector().items())},
        sort_keys=True,
        ensure_ascii=False,
    )


def merge(*updates: bytes) -> bytes:
    doc = MemoryDoc.empty(MEMORY_ID, 1)
    for update in updates:
        doc.apply(update)
    return doc.state()


def record_of(view_json: str) -> str:
    return json.dumps(
        json.loads(view_json)["record"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


@pytest.mark.parametrize("name", sorted(CASES))
@LAWS
@given(data=st.data())
def test_state_merge_is_commutative_associative_idempotent(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    history = run(play(case, data.draw(histories(case))))
    x, y, z = history.states
    assert view(x, y) == view(y, x)
    assert view(x, z) == view(z, x)
    assert view(merge(merge(x, y), z)) == view(merge(x, merge(y, z)))
    assert view(x, x) == view(x)
    assert view(merge(x, y), y) == view(merge(x, y))
    assert view(x, y, x, z, y) == view(x, y, z)


@pytest.mark.parametrize("name", sorted(CASES))
@LAWS
@given(data=st.data())
def test_delta_merge_equals_full_state_merge(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    history = run(play(case, data.draw(histories(case))))
    for mine in history.states:
        for theirs in history.states:
            doc = MemoryDoc.from_state(MEMORY_ID, mine, 1)
            source = MemoryDoc.from_state(MEMORY_ID, theirs, 2)
            delta = bytes(source.doc.get_update(doc.doc.get_state()))
            assert view(mine, delta) == view(mine, theirs)
    everything = view(*history.states)
    duplicated = [c for change in history.changes for c in (change, change)]
    assert view(*history.changes) == view(*duplicated)
    # The writers' states predate the final sync; every change merged equals all of them merged.
    assert view(*history.changes) == everything
    assert record_of(everything) == _without_version(history.final[MEMORY_ID])


def _without_version(state_json: str) -> str:
    return json.dumps(json.loads(state_json), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# -- replica-level laws -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
@LAWS
@given(data=st.data())
def test_export_apply_round_trip(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    history = run(play(case, data.draw(histories(case))))

    async def scenario() -> None:
        async with _replica("copy") as copy, _replica("copy-of-copy") as second:
            for payload in history.payloads:
                await copy.apply(payload)
            assert canonical_state(copy) == history.final
            await second.apply(await copy.export_since(CHANNEL))
            assert canonical_state(second) == history.final
            assert second.version_vectors() == copy.version_vectors()
            again = await second.apply(await copy.export_since(CHANNEL))
            assert (again.applied, again.pending) == (0, 0)
            assert canonical_state(second) == history.final

    run(scenario())


def deliveries(count: int) -> st.SearchStrategy[list[int]]:
    """An arrival order of ``count`` payloads: a permutation with some of them repeated anywhere."""
    order = st.permutations(range(count))
    extra = st.lists(st.integers(0, max(count - 1, 0)), max_size=count) if count else st.just([])
    positions = st.lists(st.integers(0, 2 * count + 1), max_size=count)
    return st.tuples(order, extra, positions).map(
        lambda t: _insert(list(t[0]), t[1], t[2]),
    )


def _insert(order: list[int], extra: list[int], positions: list[int]) -> list[int]:
    for item, position in zip(extra, positions, strict=False):
        order.insert(position % (len(order) + 1), item)
    for item in extra[len(positions) :]:
        order.append(item)
    return order


@pytest.mark.parametrize("name", sorted(CASES))
@LAWS
@given(data=st.data())
def test_replicas_fed_deltas_in_any_order_with_duplicates_converge(name: str, data: st.DataObject) -> None:
    case = CASES[name]
    history = run(play(case, data.draw(histories(case))))
    orders = [data.draw(deliveries(len(history.payloads)), label=f"order {i}") for i in range(3)]

    async def scenario() -> None:
        observers = [_replica(f"o{i}") for i in range(len(orders))]
        for observer in observers:
            await observer.start()
        try:
            for observer, order in zip(observers, orders, strict=True):
                for index in order:
                    await observer.apply(history.payloads[index])
            assert_converged(observers)
            for observer in observers:
                assert canonical_state(observer) == history.final
                assert_acknowledged_present(observer, history.acked)
        finally:
            for observer in observers:
                await observer.stop()

    run(scenario())


# -- the semantics each law protects, stated directly ------------------------------------------------


async def _pair() -> tuple[Replica, Replica]:
    a, b = _replica("a"), _replica("b")
    await a.start()
    await b.start()
    return a, b


@settings(LAWS, max_examples=25)
@given(first=_texts, second=_texts)
def test_concurrent_register_writes_are_kept_as_a_conflict(first: str, second: str) -> None:
    async def scenario() -> None:
        a, b = await _pair()
        try:
            memory = await a.add("start", user_id="u1")
            await _pull(a, b)
            await a.update(memory.id, content=first)
            await b.update(memory.id, content=second)
            await _sync_all([a, b])
            assert_converged([a, b])
            merged = await a.get(memory.id)
            conflicts = await a.conflicts(memory_id=memory.id)
            if first == second:
                assert merged.content == first and not conflicts
            else:
                (conflict,) = conflicts
                assert conflict.field == "content"
                assert sorted(v.value for v in conflict.values) == sorted([first, second])
                assert merged.content == conflict.values[0].value  # reads agree with the tie-break
        finally:
            await a.stop()
            await b.stop()

    run(scenario())


@settings(LAWS, max_examples=25)
@given(item=_items, re_add=st.booleans())
def test_or_set_add_wins_over_a_concurrent_remove(item: Any, re_add: bool) -> None:
    async def scenario() -> None:
        a, b = await _pair()
        try:
            memory = await a.add([item], kind="list", user_id="u1")
            await _pull(a, b)
            await b.remove_items(memory.id, item)
            if re_add:
                await a.add_items(memory.id, item)
            await _sync_all([a, b])
            assert_converged([a, b])
            assert (item in (await a.get(memory.id)).content) == re_add
        finally:
            await a.stop()
            await b.stop()

    run(scenario())


@settings(LAWS, max_examples=25)
@given(content=_texts)
def test_update_racing_a_delete_is_a_lifecycle_conflict(content: str) -> None:
    async def scenario() -> None:
        a, b = await _pair()
        try:
            memory = await a.add("start", user_id="u1")
            await _pull(a, b)
            await a.delete(memory.id)
            await b.update(memory.id, content=content)
            await _sync_all([a, b])
            assert_converged([a, b])
            merged = await b.get(memory.id)
            assert merged.conflicts == ("lifecycle",)
            assert memory.id in {m.id for m in await b.list()}  # not silently dropped
            assert merged.content == content  # not silently lost either
        finally:
            await a.stop()
            await b.stop()

    run(scenario())
