"""MemoryDoc: the record a create returns is exactly what reading the new document gives."""

from __future__ import annotations

import gc
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import _pycrdt

from crdtmem.clock import HybridLogicalClock
from crdtmem.crdt import Conversation
from crdtmem.document.memory import MemoryDoc
from crdtmem.document.records import Scope, Source
from crdtmem.document.yroots import YDoc, YMap
from crdtmem.engine.changes import Dots
from crdtmem.errors import InvalidInput
from crdtmem.testing import strategies as cst

_ticks = itertools.count(1_700_000_000_000)


@settings(max_examples=300, deadline=None)
@given(cst.memory_specs(), st.booleans(), st.lists(cst.json_values(max_leaves=1), max_size=3))
def test_the_record_of_a_create_is_the_record_read_back(spec, with_source, more_tags):
    clock = HybridLogicalClock(lambda: next(_ticks))
    doc = MemoryDoc.empty("m1", 7)
    dots = Dots("phone", clock)
    tags = [*spec.tags, *more_tags, *spec.tags[:1]]  # duplicates too: an OR-set reads each once
    with doc.change():
        made = doc.create(
            memory_id="m1",
            kind=spec.kind,
            content=spec.content,
            source=Source("agent", "session", spec.user_id) if with_source else Source(None, None, None),
            scope=Scope(spec.user_id, spec.tenant_id, spec.topics, spec.shared),
            metadata=dict(spec.metadata),
            tags=tags,
            next_dot=dots,
        )
    read, conflicts = doc.read()
    assert made == read
    assert conflicts == []
    assert made.to_dict() == read.to_dict()


def _fact(replica: str = "phone") -> tuple[MemoryDoc, Dots]:
    doc = MemoryDoc.empty("m1", 7)
    dots = Dots(replica, HybridLogicalClock(lambda: next(_ticks)))
    with doc.change():
        doc.create(
            memory_id="m1",
            kind="fact",
            content="v0",
            source=Source(None, None, "u1"),
            scope=Scope("u1", None, (), False),
            metadata={"confidence": 0.5},
            tags=[],
            next_dot=dots,
        )
    return doc, dots


def test_a_register_write_overwrites_its_replicas_entry_so_the_document_barely_grows():
    doc, dots = _fact()
    before = len(doc.state())
    for i in range(500):
        with doc.change():
            doc.update(next_dot=dots, content=f"value {i}", metadata={"confidence": i / 500})
    grown = (len(doc.state()) - before) / 500
    # content, a metadata key and lifecycle are written per update: the document grew ~134 bytes per
    # update when entries were keyed by dot, ~15 now
    assert grown < 40, f"{grown:.0f} bytes per update"
    assert set(doc._content.keys()) == {"phone"} and set(doc._metadata.keys()) == {"confidence#phone"}
    assert doc.read()[0].content == "value 499"


def test_entries_keyed_by_dot_by_earlier_writers_read_merge_and_resolve_alike():
    doc, dots = _fact()
    stamp = "001700000000000.000000"
    with doc.change():  # a concurrent write by an earlier writer: its entries are keyed by dot
        doc._content[f"tablet:{stamp}"] = {"v": '"from the tablet"', "hlc": stamp, "by": "tablet"}
        doc._metadata[f"confidence#tablet:{stamp}"] = {"v": "0.9", "hlc": stamp, "by": "tablet"}
    memory, conflicts = doc.read()
    assert memory.content == "v0"  # the higher (hlc, replica) wins the read
    assert [c.field for c in conflicts] == ["content", "metadata.confidence"]
    with doc.change():  # a write that observed both siblings resolves each register
        doc.resolve("content", "settled", dots)
        doc.resolve("metadata.confidence", 0.7, dots)
    memory, conflicts = doc.read()
    assert (memory.content, memory.metadata, conflicts) == ("settled", {"confidence": 0.7}, [])
    assert set(doc._content.keys()) == {"phone"}


def _conversation(doc: MemoryDoc, dots: Dots) -> None:
    with doc.change():
        doc.create(
            memory_id="m1",
            kind="conversation",
            content=[{"role": "user", "text": "hello"}],
            source=Source(None, None, "u1"),
            scope=Scope("u1", None, (), False),
            metadata={},
            tags=[],
            next_dot=dots,
        )


_conversation_steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 2), st.text(max_size=3)),
        st.tuples(st.just("sync"), st.integers(0, 2), st.integers(0, 2)),
        st.tuples(st.just("read"), st.integers(0, 2), st.none()),
        # a foreign Yjs client: inserts anything anywhere, deletes ranges (crdtmem itself only appends)
        st.tuples(st.just("foreign_insert"), st.integers(0, 2), st.sampled_from([7, "junk", {"role": "x"}])),
        st.tuples(st.just("foreign_delete"), st.integers(0, 2), st.integers(1, 3)),
        # ... and shared types: a Y.Map holding a message's fields (it reads as a message), edited later
        st.tuples(st.just("foreign_ymap"), st.integers(0, 2), st.text(max_size=3)),
        st.tuples(st.just("foreign_ymap_edit"), st.integers(0, 2), st.text(max_size=3)),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(_conversation_steps, st.randoms(use_true_random=False))
def test_a_conversation_read_after_any_changes_equals_reading_the_whole_array(steps, rng):
    """The message log kept in step by change deltas (``MessageLog``) never drifts from the array."""
    clock = HybridLogicalClock(lambda: next(_ticks))
    origin, origin_dots = MemoryDoc.empty("m1", 1), Dots("r0", clock)
    _conversation(origin, origin_dots)
    docs = [origin] + [MemoryDoc.from_state("m1", origin.state(), client_id=i + 2) for i in range(2)]
    dots = [origin_dots] + [Dots(f"r{i + 1}", clock) for i in range(2)]

    def check(doc: MemoryDoc) -> None:
        whole = [m.to_dict() for m in Conversation(doc._messages.to_py()).messages()]
        record, _ = doc.read()
        assert record.content == whole
        assert record.updated_at >= max((m["hlc"] for m in whole), default="")

    for step, i, arg in steps:
        doc = docs[i]
        if step == "append":
            with doc.change():
                doc.append_message(role="user", text=arg, next_dot=dots[i])
        elif step == "sync":
            target = docs[arg]
            target.apply(doc.doc.get_update(target.doc.get_state()))
        elif step == "read":
            check(doc)
        else:
            foreign = YDoc(100 + i)
            foreign.apply_update(doc.state())
            with foreign.transaction() as txn:
                array = foreign.raw.get_or_insert_array(txn, "messages")
                length = array.len(txn)
                if step == "foreign_insert":
                    array.insert(txn, rng.randint(0, length), arg)
                elif step == "foreign_ymap":
                    ymap = array.insert_map_prelim(txn, rng.randint(0, length))
                    message = {
                        "id": f"x:{arg}",
                        "role": "user",
                        "text": arg,
                        "hlc": clock.now().encode(),
                        "by": "x",
                    }
                    for key, value in message.items():
                        ymap.insert(txn, key, value)
                elif step == "foreign_ymap_edit":
                    nested = [
                        item
                        for item in map(lambda k: array.get(txn, k), range(length))
                        if isinstance(item, _pycrdt.Map)
                    ]
                    if nested:
                        rng.choice(nested).insert(txn, "text", arg)
                elif length:
                    at = rng.randrange(length)
                    array.remove_range(txn, at, min(arg, length - at))
            doc.apply(foreign.get_update(doc.doc.get_state()))
    for doc in docs:
        check(doc)


def test_a_conversation_read_inside_a_change_sees_the_change():
    clock = HybridLogicalClock(lambda: next(_ticks))
    doc, dots = MemoryDoc.empty("m1", 1), Dots("r0", clock)
    _conversation(doc, dots)
    assert [m["text"] for m in doc.read()[0].content] == ["hello"]  # the kept log exists now
    with doc.change():
        doc.append_message(role="user", text="second", next_dot=dots)
        assert [m["text"] for m in doc.read()[0].content] == ["hello", "second"]
    assert [m["text"] for m in doc.read()[0].content] == ["hello", "second"]


def test_changing_a_returned_message_changes_nothing_the_document_keeps():
    clock = HybridLogicalClock(lambda: next(_ticks))
    doc, dots = MemoryDoc.empty("m1", 1), Dots("r0", clock)
    _conversation(doc, dots)
    content = doc.read()[0].content
    # records of one conversation share their messages, so a record's messages refuse changes
    with pytest.raises(TypeError):
        content[0]["text"] = "edited by a caller"
    with pytest.raises(TypeError):
        content.append({"role": "user", "text": "slipped in"})
    copy = [dict(m) for m in content]
    copy[0]["text"] = "a copy is the caller's own"
    with doc.change():
        doc.append_message(role="user", text="second", next_dot=dots)
    assert [m["text"] for m in doc.read()[0].content] == ["hello", "second"]


def test_a_document_of_an_unknown_format_is_read_but_never_written():
    import pytest

    from crdtmem import InvalidInput
    from crdtmem.document.memory import FORMAT, FORMAT_WIDE_IDS

    clock = HybridLogicalClock(lambda: next(_ticks))
    formats = []
    for user in ("u1", "org:alice"):
        doc = MemoryDoc.empty("m1", 7)
        with doc.change():
            doc.create(
                memory_id="m1",
                kind="fact",
                content={"v": 1},
                source=Source(None, None, user),
                scope=Scope(user),
                metadata={},
                tags=[],
                next_dot=Dots("phone", clock),
            )
        formats.append(doc._header.get("format"))
    assert formats == [FORMAT, FORMAT_WIDE_IDS]
    doc._header["format"] = "crdtmem.memory/9"  # a later format, written by a newer build
    assert doc.materialize().content == {"v": 1}
    with pytest.raises(InvalidInput, match=r"format 'crdtmem\.memory/9'"), doc.change():
        doc.update(next_dot=Dots("phone", clock), content="x")


def _append_deltas(count: int) -> tuple[MemoryDoc, list[bytes]]:
    """A conversation created and appended to ``count`` times; every change's update, in order."""
    clock = HybridLogicalClock(lambda: next(_ticks))
    doc, dots = MemoryDoc.empty("m1", 1), Dots("r0", clock)
    _conversation(doc, dots)
    updates = [doc.last_delta.update]
    for i in range(count):
        with doc.change():
            doc.append_message(role="user", text=f"turn {i}", next_dot=dots)
        updates.append(doc.last_delta.update)
    return doc, updates


def test_a_delta_carries_its_own_transaction_not_the_documents_delete_set():
    # every append re-asserts `active`, deleting the previous lifecycle entry: a delta taken as
    # get_update(state before) carried all those deletions (199 B at the start, 3.1 KB at 1,000)
    _doc, updates = _append_deltas(1_000)
    early, late = sum(map(len, updates[5:15])) / 10, sum(map(len, updates[-10:])) / 10
    assert late <= 1.2 * early, f"append delta {early:.0f} B early, {late:.0f} B after 1,000 appends"


def test_the_deltas_of_the_changes_replayed_in_order_rebuild_the_document():
    doc, updates = _append_deltas(50)
    with doc.change():
        doc.delete(Dots("r0", HybridLogicalClock(lambda: next(_ticks))))
    replay = MemoryDoc.empty("m1", 2)
    for update in [*updates, doc.last_delta.update]:
        replay.apply(update)
    assert replay.read() == doc.read()
    assert replay.state_vector() == doc.state_vector()
    assert replay.read()[0].deleted


def test_a_change_that_writes_nothing_has_an_empty_update():
    doc, _ = _fact()
    with doc.change():
        pass
    assert doc.last_delta.update == b"\x00\x00"
    assert doc.last_delta.deps == doc.doc.get_state()


def test_an_append_is_known_as_one_and_shares_the_earlier_messages():
    clock = HybridLogicalClock(lambda: next(_ticks))
    doc, dots = MemoryDoc.empty("m1", 1), Dots("r0", clock)
    _conversation(doc, dots)
    first = doc.read()[0].content
    for text in ("two", "three"):
        with doc.change():
            doc.append_message(role="user", text=text, next_dot=dots)
    after = doc.read()[0].content
    assert doc.messages_added_since(first) == 1
    assert [m["text"] for m in after[1:]] == ["two", "three"] and after[0] is first[0]
    # a message inserted before the end (a concurrent append merged in) is not an append
    other = MemoryDoc.from_state("m1", doc.state(), 9)
    with other.change():
        other.append_message(role="user", text="elsewhere", next_dot=Dots("r9", clock))
    with doc.change():
        doc.append_message(role="user", text="four", next_dot=dots)
    latest = doc.read()[0].content
    doc.apply(other.last_delta.update)
    merged = doc.read()[0].content
    if [m["text"] for m in merged][-1] == "elsewhere":
        assert doc.messages_added_since(latest) == len(latest)
    else:
        assert doc.messages_added_since(latest) is None
    assert doc.messages_added_since([dict(m) for m in merged]) is None


def test_documents_are_freed_once_dropped() -> None:
    """Yrs holds a document's observers, and Python's collector cannot see through Yrs: an observer
    that held its document would keep it, and every value it holds, for as long as the process."""
    dots = Dots("phone", HybridLogicalClock(lambda: next(_ticks)))
    gc.collect()
    before = _alive(YDoc)
    docs = []
    for kind, content in (("fact", "x" * 10_000), ("conversation", None)):
        doc = MemoryDoc.empty(kind, 7)
        with doc.change():  # a local change subscribes the capturing observer
            doc.create(
                memory_id=kind,
                kind=kind,  # type: ignore[arg-type]
                content=content,
                source=Source(None, None, "u1"),
                scope=Scope("u1", None, (), False),
                metadata={},
                tags=[],
                next_dot=dots,
            )
        docs.append(doc)
    with docs[1].change():
        docs[1].append_message("user", "hello", dots)
    assert [m["text"] for m in docs[1].messages()] == ["hello"]  # the message log observes the array
    del doc, docs
    gc.collect()
    assert _alive(YDoc) == before


def _alive(kind: type) -> int:
    return sum(type(o) is kind for o in gc.get_objects())  # isinstance would read proxies' __class__


def test_a_wide_create_reads_back_as_written_and_takes_one_dot_per_key_and_tag() -> None:
    """Metadata keys and tags are encoded once and inserted as batches from one run of dots: the
    record :meth:`MemoryDoc.create` returns is the one read back, scalars and nested values alike,
    and every key and tag has its own dot, in order (keys first, then tags)."""
    doc = MemoryDoc.empty("m-wide", 7)
    dots = Dots("r1", HybridLogicalClock(lambda: 1_700_000_000_000))
    metadata: dict[str, Any] = {f"k{i}": i for i in range(300)}
    metadata.update({"f": 1.5, "b": True, "n": None, "s": "text", "nested": {"z": [1, (2, 3)], "a": {}}})
    tags: list[Any] = [f"t{i}" for i in range(300)] + ["t1", {"b": 1, "a": 2}, 7, "t2"]
    created = doc.create(
        memory_id="m-wide",
        kind="fact",
        content="x",
        source=Source(user_id="u1"),
        scope=Scope(user_id="u1"),
        metadata=metadata,
        tags=tags,
        next_dot=dots,
    )
    read, _ = doc.read()
    assert created == read
    assert list(read.metadata) == sorted(metadata) and read.metadata["nested"] == {"a": {}, "z": [1, [2, 3]]}
    assert read.tags[:3] == ("t0", "t1", "t2") and len(read.tags) == 302
    assert doc.sizes() == (len(metadata), len(tags), 1)
    assert dots.last is not None and read.updated_at == dots.last.hlc


def test_metadata_keys_are_counted_only_as_far_as_asked() -> None:
    """A bound check counts a memory's metadata keys only until they pass the bound (a pushed
    memory of 20,000 keys is refused after counting 2,001); within it the count is exact, and a key
    with several dots (concurrent writes) counts once either way."""
    doc = MemoryDoc.empty("m-count", 7)
    dots = Dots("r1", HybridLogicalClock(lambda: 1_700_000_000_000))
    doc.create(
        memory_id="m-count",
        kind="fact",
        content="x",
        source=Source(user_id="u1"),
        scope=Scope(user_id="u1"),
        metadata={f"k{i}": i for i in range(50)},
        tags=["a", "b"],
        next_dot=dots,
    )
    created = doc.state()
    for client, replica in ((8, "r2"), (9, "r3")):  # two concurrent writes of k0: two live dots
        other = MemoryDoc.empty("m-count", client)
        other.apply(created)
        clock = HybridLogicalClock(lambda: 1_700_000_000_001)
        other.update(metadata={"k0": replica}, next_dot=Dots(replica, clock))
        doc.apply(other.state())
    assert len([key for key in YMap(doc.doc, "metadata") if key.startswith("k0#")]) == 2
    assert doc.sizes() == (50, 2, 1)
    assert doc.sizes(most=50) == (50, 2, 1)
    assert doc.sizes(most=200) == (50, 2, 1)
    assert doc.sizes(most=10) == (11, 2, 1)
    assert doc.sizes(most=0) == (1, 2, 1)
    # at or under exact_over, the metadata entries (51: k0 has two) stand for the keys, unlisted
    assert doc.sizes(exact_over=51) == (51, 2, 1)
    assert doc.sizes(exact_over=50) == (50, 2, 1)
    assert doc.sizes(most=10, exact_over=50) == (11, 2, 1)


@pytest.mark.parametrize(
    "key",
    ["", "a#b", "k" * 257, 7, "ok\ud800", "\udfff"],
    ids=["empty", "hash", "long", "int", "surrogate", "alone"],
)
def test_a_bad_metadata_key_is_refused_among_good_ones_and_nothing_is_written(key: Any) -> None:
    doc = MemoryDoc.empty("m-bad", 7)
    dots = Dots("r1", HybridLogicalClock(lambda: 1_700_000_000_000))
    metadata = {f"k{i}": i for i in range(50)} | {key: 1} | {"z": 2}
    with pytest.raises(InvalidInput):
        doc.create(
            memory_id="m-bad",
            kind="fact",
            content="x",
            source=Source(user_id="u1"),
            scope=Scope(user_id="u1"),
            metadata=metadata,
            tags=["t"],
            next_dot=dots,
        )
    assert doc.sizes()[:2] == (0, 0)
