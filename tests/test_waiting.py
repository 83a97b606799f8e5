"""The waiting set: deltas waiting for their dependencies, bounded per sender and per origin, in
deltas and in bytes (the oldest evicted first)."""

from __future__ import annotations

from pathlib import Path

from crdtmem import Limits, Replica
from crdtmem.access import Principal
from crdtmem.engine.payload import Payload, encode
from crdtmem.engine.waiting import Delivered, WaitingLimits, WaitingSet
from crdtmem.store.base import DeltaRecord

KIB = 1024
U1 = "user:u1:memories"


def waiting(n: int, *, sender: str = "alice", origin: str = "o1", size: int = KIB) -> Delivered:
    delta = DeltaRecord(f"{origin}:{n}", origin, "d1", f"{n:020d}", b"", b"u" * size, ("user:u1:memories",))
    return Delivered(delta, Principal(sender), received_ms=n)


def test_a_sender_over_its_bytes_loses_its_oldest_deltas() -> None:
    limits = WaitingLimits(per_sender_bytes=10 * KIB, per_origin_bytes=1_000 * KIB)
    parked = WaitingSet(limits)
    parked.settle([waiting(n, size=3 * KIB) for n in range(5)], [])  # 15 KiB
    parked.settle([waiting(100, sender="bob", origin="o2", size=8 * KIB)], [])
    assert parked.bytes_of("alice") == 15 * KIB
    victims = parked.over_bounds(["alice", "bob"], ["o1", "o2"])
    assert victims == ["o1:0", "o1:1"]  # the oldest, until 9 KiB are left; bob is within his
    parked.settle([], victims)
    assert parked.bytes_of("alice") == 9 * KIB and len(parked) == 4
    assert parked.over_bounds(["alice"], ["o1"]) == []


def test_an_origin_over_its_bytes_loses_its_oldest_deltas_whoever_sent_them() -> None:
    limits = WaitingLimits(per_sender_bytes=1_000 * KIB, per_origin_bytes=4 * KIB)
    parked = WaitingSet(limits)
    parked.settle([waiting(1, sender="alice"), waiting(2, sender="bob"), waiting(3, sender="alice")], [])
    parked.settle([waiting(4, sender="carol", size=2 * KIB)], [])  # o1 holds 5 KiB
    assert parked.over_bounds(["carol"], ["o1"]) == ["o1:1"]


def test_bytes_and_counts_are_bounded_together() -> None:
    parked = WaitingSet(WaitingLimits(per_sender=3, per_sender_bytes=100 * KIB))
    parked.settle([waiting(n) for n in range(5)], [])
    assert parked.over_bounds(["alice"], []) == ["o1:0", "o1:1"]  # the count bound, bytes are fine
    parked = WaitingSet(WaitingLimits(per_sender=3, per_sender_bytes=2 * KIB, per_origin=3))
    parked.settle([waiting(n) for n in range(5)], [])
    victims = parked.over_bounds(["alice"], ["o1"])
    assert victims == ["o1:0", "o1:1", "o1:2"]  # bytes asked for one more
    parked.settle([], victims)
    assert parked.bytes_of("alice") == 2 * KIB
    parked.settle([], ["o1:3", "o1:4"])
    assert parked.bytes_of("alice") == 0 and len(parked) == 0


async def test_a_replica_keeps_large_waiting_deltas_within_the_bytes_bound(tmp_path: Path) -> None:
    """Updates whose memory's creation never arrives wait; past the sender's bytes the oldest go,
    counted, and none of them is ever claimed by a vector."""
    async with Replica(None, replica_id="far") as source:
        memory = await source.add("the creation that is never sent", user_id="u1")
        for n in range(12):
            await source.update(memory.id, content=f"{n:02d}" + "x" * (200 * KIB))
        orphans = [d for d in source.store.deltas_since([U1], {}) if d.doc_id == memory.id][1:]
        keys = source.keys_for(orphans)
    limits = Limits(pending_bytes_per_sender=1024 * KIB, pending_bytes_per_origin=4096 * KIB)
    async with Replica(tmp_path / "r.db", replica_id="r", limits=limits) as replica:
        for start in range(0, len(orphans), 3):
            await replica.apply(encode(Payload("far", orphans[start : start + 3], {}, keys)))
            trust = replica.trust_status()
            assert trust["pending_bytes"] <= 1024 * KIB
        assert trust["pending"] == 5 and trust["pending_evicted"] == 7  # 5 x 200 KiB fit in 1 MiB
        assert replica.version_vector(U1) == {}
    async with Replica(tmp_path / "r.db", replica_id="r", limits=limits) as reopened:
        assert reopened.trust_status()["pending_bytes"] <= 1024 * KIB  # bounded across restarts
