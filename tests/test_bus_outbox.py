"""The outbox's direct way: an own eager write that follows the marks is published from its commit,
without a log read, in the very bytes the log path publishes; anything else takes the log path."""

from __future__ import annotations

import asyncio

import pytest

from crdtmem import Replica
from crdtmem.bus.outbox import Outbox
from crdtmem.bus.subjects import Layout
from crdtmem.metrics import Metrics

U1 = "user:u1:memories"


def _named(msg_id: str) -> int:
    """The sequence number of the entry of origin a that an eager message id names."""
    origin, seq, _ = msg_id.split(":")
    assert origin == "a"
    return int(seq)


class Sink:
    """A bus that acknowledges everything and keeps what it got: ``{msg_id: (subject, data)}``."""

    def __init__(self) -> None:
        self.got: dict[str, tuple[str, bytes]] = {}
        self.fail = False

    async def __call__(self, subject: str, data: bytes, msg_id: str, stream: str) -> bool:
        if self.fail:
            raise TimeoutError("the bus did not answer")
        duplicate = msg_id in self.got
        self.got[msg_id] = (subject, data)
        return duplicate


async def test_a_write_that_follows_the_marks_is_published_from_its_commit_in_the_log_paths_bytes(
    tmp_path,
) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a") as a:
        outbox = Outbox(a, Layout.of(), Metrics())
        unlisten = a.on_commit(outbox.on_commit)
        direct = Sink()
        await outbox.publish_pending(direct)  # the first pass reads the (empty) log
        reads = outbox.log_reads
        await a.add("first", user_id="u1", memory_id="m1")
        assert outbox.wake.is_set()
        await outbox.publish_pending(direct)
        await a.update("m1", content="second")
        await a.add("on two channels", user_id="u1", tenant_id="t", shared=True, memory_id="m2")
        await outbox.publish_pending(direct)  # two commits queued: both, still no log read
        assert outbox.log_reads == reads
        assert outbox.direct_published == 3
        assert outbox.marks[U1] == {"a": 3} and outbox.marks["tenant:t:shared"] == {"a": 1}
        await _same_as_the_log_path(a, direct)
        before = set(direct.got)
        await a.forget("m1")  # an erase marker (m1's old entries become stubs in the log)
        await a.add("after the erase", user_id="u1", memory_id="m3")
        await outbox.publish_pending(direct)
        assert outbox.lag() == 0
        assert outbox.direct_published == 5 and outbox.log_reads == reads, "the erase and the add too"
        unlisten()
        log = await _same_as_the_log_path(a, direct, only=set(direct.got) - before)
        assert len(log) == 2


async def _same_as_the_log_path(a: Replica, direct: Sink, only: set[str] | None = None) -> set[str]:
    """A fresh outbox with no marks publishes every entry the log path's way: the messages of
    ``only`` (else all) are the very ones ``direct`` got."""
    log = Sink()
    replay = Outbox(a, Layout.of(), Metrics())
    replay.marks = {}
    await replay.publish_pending(log)
    assert replay.direct_published == 0 and replay.log_reads >= 1
    ids = set(direct.got) if only is None else only
    assert ids <= set(log.got)
    for msg_id in ids:
        assert log.got[msg_id] == direct.got[msg_id], f"{msg_id} differs from the log path's message"
    return ids


async def test_a_write_that_does_not_follow_the_marks_takes_the_log_path(tmp_path) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a") as a:
        outbox = Outbox(a, Layout.of(), Metrics())
        a.on_commit(outbox.on_commit)
        sink = Sink()
        await a.add("before the first pass", user_id="u1", memory_id="m0")  # the log holds it
        await outbox.publish_pending(sink)
        assert outbox.direct_published == 0 and outbox.marks[U1] == {"a": 1}

        sink.fail = True  # a publish fails: the marks stay behind, the next pass reads the log
        await a.add("refused", user_id="u1", memory_id="m1")
        try:
            await outbox.publish_pending(sink)
        except TimeoutError:
            pass
        else:
            raise AssertionError("the failed publish was not raised")
        assert outbox.marks[U1] == {"a": 1}
        sink.fail = False
        reads = outbox.log_reads
        await a.add("after the failure", user_id="u1", memory_id="m2")  # seq 3: the mark is at 1
        await outbox.publish_pending(sink)
        assert outbox.log_reads == reads + 1, "one page, no second empty read"
        assert outbox.direct_published == 0
        assert outbox.marks[U1] == {"a": 3}
        assert sorted(m.split(":")[1] for m in sink.got) == ["1", "2", "3"]

        await a.add("follows again", user_id="u1", memory_id="m3")  # the direct way once more
        await outbox.publish_pending(sink)
        assert outbox.direct_published == 1 and outbox.log_reads == reads + 1

        outbox.direct = False  # forced: every write by the log
        await a.add("by the log", user_id="u1", memory_id="m4")
        await outbox.publish_pending(sink)
        assert outbox.direct_published == 1 and outbox.log_reads == reads + 2
        await outbox.settle()
        assert a.store.outbox_marks("nats")[U1] == {"a": 5}


async def test_entries_from_the_bus_raise_the_marks_a_moment_later_in_one_go(tmp_path) -> None:
    """A commit of entries already in the stream wakes no publisher: the marks of every such commit
    of the next few milliseconds rise together."""
    async with Replica(None, replica_id="w") as writer:
        for i in range(3):
            await writer.add(f"fact {i}", user_id="u1", memory_id=f"f{i}")
        from crdtmem.engine import payload as wire

        exported = wire.decode(await writer.export_since([U1]))
    from crdtmem.access import Principal

    relay = Principal("user:relay", ("*",), (U1,), ("*",), ("*",))
    async with Replica(tmp_path / "b.db", replica_id="b") as b:
        outbox = Outbox(b, Layout.of(), Metrics())
        b.on_commit(outbox.on_commit)
        await outbox.publish_pending(Sink())
        outbox.wake.clear()
        for delta in exported.deltas:
            outbox.handed(U1, delta.origin, delta.all_seqs(U1))
            await b.apply_payload(wire.Payload("w", [delta], {}, exported.keys), sender=relay, isolate=True)
        assert not outbox.wake.is_set(), "no publisher woken for entries from the bus"
        import asyncio

        for _ in range(100):
            if outbox.marks.get(U1, {}).get("w") == 3:
                break
            await asyncio.sleep(0.005)
        assert outbox.marks[U1] == {"w": 3}
        assert outbox.log_reads == 1
        await outbox.settle()
        assert b.store.outbox_marks("nats")[U1] == {"w": 3}


class Starter:
    """Publishes handed over from commit listeners: ``(msg_id, future)`` in the order started, the
    futures settled by the test as the bus would (PubAck, failure)."""

    def __init__(self) -> None:
        self.started: list[tuple[str, asyncio.Future[bool]]] = []
        self.flushes = 0

    def start(self, subject: str, data: bytes, msg_id: str, stream: str) -> asyncio.Future[bool]:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.started.append((msg_id, future))
        return future

    def flush(self) -> None:
        self.flushes += 1


async def test_a_connected_outbox_publishes_an_own_write_from_its_commit_and_marks_it_on_the_ack(
    tmp_path,
) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a") as a:
        outbox = Outbox(a, Layout.of(), Metrics())
        a.on_commit(outbox.on_commit)
        starter, sink = Starter(), Sink()
        outbox.connect(starter.start, starter.flush, 5.0)
        await outbox.publish_pending(sink)  # the first pass reads the (empty) log
        reads = outbox.log_reads
        await a.add("first", user_id="u1", memory_id="m1")
        assert [_named(m) for m, _ in starter.started] == [1] and starter.flushes == 1
        assert outbox.marks.get(U1, {}) == {}, "no mark before the PubAck"
        starter.started[0][1].set_result(False)
        await outbox.publish_pending(sink)
        assert outbox.marks[U1] == {"a": 1} and outbox.direct_published == 1
        assert outbox.log_reads == reads and not sink.got

        await a.update("m1", content="second")  # the bus fails it: the log path publishes it
        starter.started[1][1].set_exception(TimeoutError("no PubAck"))
        with pytest.raises(TimeoutError):
            await outbox.publish_pending(sink)
        assert outbox.marks[U1] == {"a": 1}
        await outbox.publish_pending(sink)
        assert {_named(m) for m in sink.got} == {2} and outbox.marks[U1] == {"a": 2}

        await a.update("m1", content="third")  # read from the log, not a direct way: follows now
        await a.update("m1", content="fourth")
        assert len(starter.started) == 4
        outbox.disconnect()  # the session ends before the PubAcks: the next publishes them again
        assert all(f.cancelled() for _, f in starter.started[2:])
        await outbox.publish_pending(sink)
        assert {3, 4} <= {_named(m) for m in sink.got}
        assert outbox.marks[U1] == {"a": 4} and outbox.lag() == 0
        await a.update("m1", content="fifth")  # not connected: the publisher's direct way
        assert len(starter.started) == 4
        await outbox.publish_pending(sink)
        assert outbox.marks[U1] == {"a": 5} and 5 in {_named(m) for m in sink.got}
