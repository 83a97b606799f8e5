"""The remote apply path (crdtmem/engine/remote.py): the channel rules, and deltas that fail their checks
only once they can be applied, which must not hold a memory or a stream back for good."""

from __future__ import annotations

import dataclasses
import time

import pytest

from crdtmem import ClockSkewError, Replica
from crdtmem.clock import Hlc
from crdtmem.engine import payload as wire


async def test_a_parked_delta_that_fails_once_applicable_is_rejected_not_held_against_others(tmp_path):
    """A delta parked for its dependencies is checked only when they arrive. One that fails then
    (stamps a day ahead inside its update) is rejected and dropped; the legitimate delta that
    completed it applies, now and after a restart."""
    day = 86_400_000
    channel = "user:u1:memories"
    a = await Replica(tmp_path / "a.db", replica_id="a").start()
    b = await Replica(tmp_path / "b.db", replica_id="b").start()
    ahead = await Replica(
        tmp_path / "e.db",
        replica_id="e",
        wall_clock=lambda: int(time.time() * 1000) + day,
        max_drift_ms=10 * day,
    ).start()
    try:
        memory = await a.add("v0", user_id="u1")
        for replica in (b, ahead):
            await replica.apply(await a.export_since(channel, {}))
        await a.update(memory.id, content="v1 from a")  # b lacks it: what the bad delta depends on
        await ahead.apply(await a.export_since(channel, {}))
        await ahead.update(memory.id, metadata={"x": 1})  # stamped a day ahead
        (bad,) = [d for d in ahead.store.deltas_since([channel], {}) if d.origin == "e"]
        now = Hlc(int(time.time() * 1000), 0).encode()
        disguised = dataclasses.replace(bad, hlc=now, uid=f"e:{now}")  # its own stamp looks fine
        parked = await b.apply(wire.encode(wire.Payload("e", [disguised])))
        assert (parked.applied, parked.pending) == (0, 1)
        result = await b.apply(await a.export_since(channel, b.version_vector(channel)))
        assert (result.applied, result.pending) == (1, 0)
        assert (await b.get(memory.id)).content == "v1 from a"
        assert (await b.get(memory.id)).metadata == {}
        assert b.store.pending() == [] and b.pending_count == 0
        # resent now that it can be applied at once: refused like any delta stamped too far ahead (a
        # clock failure is not remembered: the same delta may be fine once the clocks agree)
        with pytest.raises(ClockSkewError):
            await b.apply(wire.encode(wire.Payload("e", [disguised])))
        assert b.pending_count == 0 and (await b.get(memory.id)).metadata == {}
    finally:
        for replica in (a, b, ahead):
            await replica.stop()


async def test_a_stream_applies_around_a_memory_that_fails_its_checks(tmp_path):
    """Two replicas created the same caller-chosen id with different scopes; where the other's header
    wins the merge, the memory would move. A direct apply refuses such a payload as a whole
    (``test_bad_input``); a link or pull (``isolate``) applies everything else and rejects that
    memory's deltas, so one mistake cannot stop the channel."""
    channel = "user:u1:memories"
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
    ):
        await a.add("from a", memory_id="mem1", user_id="u1", topics=["red"])
        await b.add("from b", memory_id="mem1", user_id="u1", topics=["blue"])
        mine = await a.add("a's other fact", user_id="u1")
        theirs = await b.add("b's other fact", user_id="u1")
        outcomes = []
        for source, target in ((a, b), (b, a), (a, b), (b, a)):
            payload = await source.export_since(channel, target.version_vector(channel))
            outcomes.append(await target.apply_payload(wire.decode(payload), isolate=True))
        assert sum(r.rejected for r in outcomes) >= 1
        assert (await a.get(theirs.id)).content == "b's other fact"
        assert (await b.get(mine.id)).content == "a's other fact"
