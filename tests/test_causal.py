"""Causal delivery: what is read of a waiting delta is kept for that very record only."""

from __future__ import annotations

import dataclasses

from crdtmem import Replica
from crdtmem.document.memory import MemoryDoc
from crdtmem.engine.causal import Known, apply_causally
from crdtmem.store.base import DeltaRecord

U1 = "user:u1:memories"


async def _three_deltas() -> list[DeltaRecord]:
    async with Replica(None, replica_id="src") as source:
        memory = await source.add("v0", user_id="u1")
        for n in (1, 2):
            await source.update(memory.id, content=f"v{n}")
        return [d for d in source.store.deltas_since([U1], {}) if d.doc_id == memory.id]


async def test_a_waiting_delta_is_read_once_and_applies_when_its_dependencies_arrive() -> None:
    first, second, third = await _three_deltas()
    doc = MemoryDoc.empty(first.doc_id, 5)
    known: Known = {}
    applied, waiting, _ = apply_causally([third], lambda _: doc, known=known)
    assert not applied and waiting == [third]
    assert (third.uid, "need") in known
    applied, waiting, _ = apply_causally([first, second, third], lambda _: doc, {third.uid}, known=known)
    assert applied == [first, second, third] and not waiting
    assert doc.materialize().content == "v2"


async def test_what_was_read_is_used_for_the_same_record_only() -> None:
    first, second, third = await _three_deltas()
    known: Known = {}
    never = {999_999: 1}  # planted: a need no document meets
    known[(third.uid, "need")] = (third.deps, third.update, never)
    doc = MemoryDoc.empty(first.doc_id, 5)
    applied, waiting, _ = apply_causally([first, second, third], lambda _: doc, known=known)
    assert applied == [first, second] and waiting == [third], "the record's reading was not reused"

    # another record under the same uid (its bytes are other objects) is read anew
    other = dataclasses.replace(
        third, deps=bytes(bytearray(third.deps)), update=bytes(bytearray(third.update))
    )
    applied, waiting, _ = apply_causally([other], lambda _: doc, known=known)
    assert applied == [other] and not waiting
    assert known[(third.uid, "need")][2] != never
