"""A node's durable consumer (crdtmem/bus/consumer.py) on a real JetStream server: a fetched batch
is applied in one durable commit and acknowledged only after it; a node that committed a batch but
never acknowledged it (it died in between) gets the batch again and applies nothing twice; the
stream sequence the consumer reads from a message's reply subject is the one nats-py reads; an
entry committed while a read holds an older snapshot of the file open is published all the same."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.js import api

from crdtmem import Replica
from crdtmem.bus import BusClient, BusSettings
from crdtmem.bus.gaps import pending_count, stream_sequence
from crdtmem.engine import payload as wire
from crdtmem.store.base import Commit
from tests.support.rest import eventually

U1 = "user:u1:memories"
INCREMENTS = 20


async def _written(tmp_path: Path, url: str) -> Replica:
    """Node a's counter, incremented :data:`INCREMENTS` times, all of it published."""
    a = await Replica(tmp_path / "a.db", replica_id="a").start()
    await a.add(0, kind="counter", user_id="u1", memory_id="c")
    for _ in range(INCREMENTS):
        await a.increment("c")
    async with BusClient(a, BusSettings([url])) as bus:
        await eventually(lambda: _drained(bus), what="a's outbox drained")
    return a


async def _drained(bus: BusClient) -> bool:
    return bool(bus.ready and bus.outbox is not None and bus.outbox.lag() == 0)


def _spy_commits(replica: Replica, log: list[tuple[str, Any]]) -> None:
    commit = replica.store.commit

    def spied(work: list[Commit]) -> Any:
        results = commit(work)
        log.append(("commit", {d.uid for unit in work for d in unit.deltas}))
        return results

    replica.store.commit = spied  # type: ignore[method-assign]


async def test_a_fetched_batch_is_committed_once_and_acknowledged_after_the_commit(
    tmp_path, nats_server, monkeypatch
):
    a = await _written(tmp_path, nats_server.url)
    await a.stop()
    log: list[tuple[str, Any]] = []
    ack = Msg.ack

    async def logged_ack(msg: Msg) -> None:
        log.append(("ack", {d.uid for d in wire.decode(msg.data).deltas}))
        await ack(msg)

    monkeypatch.setattr(Msg, "ack", logged_ack)
    async with Replica(tmp_path / "b.db", replica_id="b") as b:
        _spy_commits(b, log)
        async with BusClient(b, BusSettings([nats_server.url])) as bus:
            await eventually(lambda: _holds(b, INCREMENTS + 1), what="b holds every entry")
            await eventually(lambda: _consumed(bus, INCREMENTS + 1), what="every message acknowledged")
        assert (await b.get("c")).content == INCREMENTS
    commits = [uids for kind, uids in log if kind == "commit"]
    acks = [uids for kind, uids in log if kind == "ack"]
    assert len(acks) == INCREMENTS + 1
    # every entry in exactly one commit; the 21 were in the stream before b started, so the
    # consumer applies them in batches (how many messages one read of the socket brings varies)
    assert sum(len(uids) for uids in commits) == INCREMENTS + 1
    assert set().union(*commits) == set().union(*acks)
    assert len(commits) < INCREMENTS + 1
    # a message is acknowledged only once the commit holding its delta returned
    committed: set[str] = set()
    for kind, uids in log:
        if kind == "commit":
            committed |= uids
        else:
            assert uids <= committed, f"{uids} acknowledged before its commit"


async def test_a_batch_committed_but_not_acknowledged_comes_again_and_applies_nothing_twice(
    tmp_path, nats_server, monkeypatch
):
    a = await _written(tmp_path, nats_server.url)
    await a.stop()
    settings = BusSettings([nats_server.url], ack_wait_s=1.0)
    ack = Msg.ack
    acks_lost = True

    async def lost(msg: Msg) -> None:  # the node dies between its commit and its acks
        if not acks_lost:
            await ack(msg)

    monkeypatch.setattr(Msg, "ack", lost)
    async with Replica(tmp_path / "b.db", replica_id="b") as b:
        async with BusClient(b, settings) as bus:
            await eventually(lambda: _holds(b, INCREMENTS + 1), what="b applied the batch")
            await eventually(lambda: _consumed(bus, INCREMENTS + 1), what="b handled the batch")
        assert (await b.get("c")).content == INCREMENTS
        acks_lost = False
        log: list[tuple[str, Any]] = []
        _spy_commits(b, log)
        async with BusClient(b, settings) as again:  # the restart: the batch is delivered again
            await eventually(lambda: _consumed(again, INCREMENTS + 1), what="redelivered")
            duplicates = again.metrics.value("crdtmem_bus_duplicates_total")
        # each message came again and was taken for a duplicate (one whose ack took longer than
        # the ack wait on a loaded machine may come a third time, and is a duplicate again)
        assert duplicates >= INCREMENTS + 1
        assert not [uids for kind, uids in log if kind == "commit" and uids]  # nothing applied again
        assert (await b.get("c")).content == INCREMENTS
        assert b.version_vector(U1) == {"a": INCREMENTS + 1}


async def _holds(replica: Replica, seq: int) -> bool:
    return replica.version_vector(U1).get("a", 0) >= seq


async def _consumed(bus: BusClient, count: int) -> bool:
    await asyncio.sleep(0)
    return sum(c.consumed for c in bus.consumers.values()) >= count


async def test_the_stream_sequence_read_from_the_reply_subject_is_nats_pys(nats_server) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="SEQ", subjects=["seq.>"])
        for n in range(12):
            await js.publish(f"seq.{n % 3}", b"x")
        config = api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT)
        sub = await js.pull_subscribe("seq.1", durable="one", stream="SEQ", config=config)
        batch = await sub.fetch(10, timeout=2.0)
        assert [stream_sequence(m) for m in batch] == [m.metadata.sequence.stream for m in batch]
        assert [pending_count(m) for m in batch] == [m.metadata.num_pending for m in batch]
        assert [stream_sequence(m) for m in batch] == [2, 5, 8, 11]  # a filtered consumer's jumps
    finally:
        await nc.close()
    # the reply subject with a domain and an account hash (12 tokens), and one nats-py must read
    domain = Msg(None, "s", "$JS.ACK.hub.HASH.SEQ.one.1.42.7.1700000000000000000.5.xyz", b"")  # type: ignore[arg-type]
    assert stream_sequence(domain) == 42 == domain.metadata.sequence.stream
    assert pending_count(domain) == 5 == domain.metadata.num_pending
    v1 = Msg(None, "s", "$JS.ACK.SEQ.one.1.43.7.1700000000000000000.6", b"")  # type: ignore[arg-type]
    assert stream_sequence(v1) == 43 == v1.metadata.sequence.stream
    assert pending_count(v1) == 6 == v1.metadata.num_pending


async def test_an_entry_committed_under_an_open_read_snapshot_is_published(tmp_path, nats_server) -> None:
    """A read left open on the store's reader connection keeps its snapshot of the file: a log page
    read meanwhile misses entries the vectors already claim. The outbox must not take them for
    entries decided against (and raise its mark past them, so that no node ever gets them)."""
    async with Replica(tmp_path / "a.db", replica_id="a") as a:
        await a.add(0, kind="counter", user_id="u1", memory_id="c")
        async with BusClient(a, BusSettings([nats_server.url])) as bus:
            await eventually(lambda: _drained(bus), what="a's outbox drained")
            assert bus.outbox is not None
            bus.outbox.direct = False  # the log path (the direct way publishes without reading it)
            reader = a.store._r.execute("SELECT name FROM sqlite_master")  # type: ignore[attr-defined]
            reader.fetchone()  # a statement still stepping: the connection's snapshot stays
            await a.increment("c")  # entry 2: in the vectors, not in the snapshot
            await asyncio.sleep(0.5)  # the publisher reads the log on the old snapshot meanwhile
            assert bus.outbox.marks[U1]["a"] == 1, "the mark waits for the entry"
            reader.close()
            await eventually(lambda: _drained(bus), what="entry 2 published")
        nc = await nats.connect(nats_server.url)
        try:
            stream = await nc.jetstream().stream_info("CRDTMEM_USERS")
            assert stream.state.messages == 2, "both entries are in the stream"
        finally:
            await nc.close()
