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
