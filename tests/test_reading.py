"""Reading a memory's id and channels from its header alone: as the full read checks it, with the
header's values read from the binding only when they read the same as from the document's JSON."""

from __future__ import annotations

import pycrdt
import pytest

from crdtmem.clock import HybridLogicalClock
from crdtmem.document import reading
from crdtmem.document.memory import MemoryDoc
from crdtmem.document.records import Scope, Source
from crdtmem.document.yroots import YMap
from crdtmem.engine.changes import Dots
from crdtmem.errors import MalformedPayload


def _memory(scope: Scope) -> MemoryDoc:
    doc = MemoryDoc.empty("m1", 7)
    doc.create(
        memory_id="m1",
        kind="fact",
        content="x",
        source=Source(user_id="u1"),
        scope=scope,
        metadata={},
        tags=[],
        next_dot=Dots("r1", HybridLogicalClock(lambda: 1_700_000_000_000)),
    )
    return doc


@pytest.mark.parametrize(
    "scope",
    [Scope(user_id="u1"), Scope(user_id="u1", tenant_id="t1", topics=("a", "b"), shared=True), Scope()],
    ids=["user", "tenant-topics", "global"],
)
def test_the_header_gives_the_channels_the_record_gives(scope: Scope) -> None:
    doc = _memory(scope)
    memory = doc.materialize()
    assert doc.header_channels() == (memory.id, memory.channels) == ("m1", scope.channels())


def test_a_header_value_json_renders_otherwise_reads_as_its_json() -> None:
    doc = _memory(Scope(user_id="u1"))
    YMap(doc.doc, "header")["scope"] = {"user_id": "u1", "topics": [], "shared": 1}  # a number
    assert doc.header_channels() == ("m1", Scope(user_id="u1", shared=True).channels())
    YMap(doc.doc, "header")["id"] = 5  # a foreign writer's: the id reads as the JSON gives it
    assert doc.header_channels()[0] == str(reading.snapshot(doc.doc, ("header",), ())["header"]["id"])


def test_a_shared_type_in_the_header_is_read_as_its_json() -> None:
    foreign: pycrdt.Doc = pycrdt.Doc()
    doc = _memory(Scope(user_id="u1"))
    foreign.apply_update(doc.state())
    header = foreign.get("header", type=pycrdt.Map)
    header["scope"] = pycrdt.Map({"user_id": "u2", "topics": [], "shared": False})
    doc.apply(foreign.get_update(doc.doc.get_state()))
    assert doc.header_channels() == ("m1", Scope(user_id="u2").channels())


def test_a_header_without_an_id_is_refused() -> None:
    with pytest.raises(MalformedPayload):
        MemoryDoc.empty("m1", 7).header_channels()
