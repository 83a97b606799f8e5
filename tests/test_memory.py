"""MemoryDoc: the record a create returns is exactly what reading the new document gives."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from crdtmem.changes import Dots
from crdtmem.clock import HybridLogicalClock
from crdtmem.memory import MemoryDoc
from crdtmem.records import Scope, Source
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
