"""The remote apply path (crdtmem/engine/remote.py): the channel rules, and deltas that fail their checks
only once they can be applied, which must not hold a memory or a stream back for good."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable

import pytest

from crdtmem import ClockSkewError, Replica
from crdtmem.clock import Hlc
from crdtmem.engine import payload as wire
from crdtmem.engine import trust
from crdtmem.store.base import DeltaRecord


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


async def test_a_page_of_signed_deltas_is_verified_while_the_loop_serves_others(tmp_path, monkeypatch):
    """A page of signed deltas costs a signature check each (tenths of a ms): they are made in a
    worker thread, and the event loop serves other requests meanwhile. The checks are held until a
    bystander's write has been acknowledged: the write completes while the push is still in
    progress, and no signature of the page is checked on the loop."""
    channel = "user:u1:memories"
    async with Replica(None, replica_id="src") as source:
        memory = await source.add("v0", user_id="u1")
        for i in range(3 * trust.VERIFY_SLICE - 1):
            await source.update(memory.id, metadata={"n": i})
        deltas = source.store.deltas_since([channel], {})
        page = wire.Payload("src", deltas, {}, source.keys_for(deltas))
    loop_thread = threading.get_ident()
    checked_on: list[int] = []
    real_verify = trust.verify

    def verify(key: bytes, delta: DeltaRecord) -> bool:
        checked_on.append(threading.get_ident())
        return real_verify(key, delta)

    entered, release = threading.Event(), threading.Event()
    real_verify_pairs = trust.verify_pairs

    def held_verify_pairs(pairs: list[tuple[bytes, DeltaRecord]]) -> Callable[[bytes, DeltaRecord], bool]:
        entered.set()
        assert release.wait(60), "the bystander's write never completed"
        return real_verify_pairs(pairs)

    monkeypatch.setattr(trust, "verify", verify)
    monkeypatch.setattr(trust, "verify_pairs", held_verify_pairs)
    async with Replica(tmp_path / "hub.db", replica_id="hub") as hub:
        bystander = await hub.add("bob's", user_id="u2")
        push = asyncio.ensure_future(hub.apply_payload(page, isolate=True))
        assert await asyncio.to_thread(entered.wait, 60)
        written = await hub.update(bystander.id, metadata={"seen": 1})
        assert written.metadata == {"seen": 1}
        assert not push.done(), "the push finished before the bystander's write"
        release.set()
        result = await push
        assert result.applied == len(deltas) == 3 * trust.VERIFY_SLICE
        assert (await hub.get(memory.id)).metadata == {"n": 3 * trust.VERIFY_SLICE - 2}
    assert len(checked_on) == len(deltas)
    assert loop_thread not in checked_on


async def test_a_forged_signature_in_a_page_checked_off_the_loop_is_still_refused(tmp_path):
    """The checks made in the worker thread decide as on the loop: one forged delta among a page
    is refused (unauthenticated), the rest apply."""
    channel = "user:u1:memories"
    async with Replica(None, replica_id="src") as source:
        memory = await source.add("v0", user_id="u1")
        for i in range(trust.VERIFY_ON_THREAD * 4):
            await source.update(memory.id, metadata={"n": i})
        deltas = source.store.deltas_since([channel], {})
        keys = source.keys_for(deltas)
    last = deltas[-1]
    assert last.signature is not None
    forged = dataclasses.replace(last, signature=dataclasses.replace(last.signature, sig=bytes(64)))
    async with Replica(tmp_path / "hub.db", replica_id="hub") as hub:
        result = await hub.apply_payload(wire.Payload("src", [*deltas[:-1], forged], {}, keys))
        assert (result.applied, result.unauthenticated) == (len(deltas) - 1, 1)
        assert (await hub.get(memory.id)).metadata == {"n": len(deltas) - 3}
