"""Forgetting a memory erases it: state, log, history, index and the bytes of the SQLite files, on
every replica that syncs it, and it cannot come back from a peer that still holds it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from crdtmem import Memory, MemoryEvent, Replica
from crdtmem.access import Principal
from crdtmem.document.erasure import EMPTY_UPDATE, is_marker
from crdtmem.engine import payload as wire
from crdtmem.engine.feed import Subscription
from crdtmem.errors import NotFound
from crdtmem.index import IndexSettings
from crdtmem.store.base import Commit
from crdtmem.store.memory import MemoryStore
from crdtmem.store.sqlite import SQLiteStore
from crdtmem.testing import assert_converged, assert_forgotten_absent, assert_store_consistent
from tests.support.processes import ServerProcess
from tests.support.rest import Api, eventually

U1 = "user:u1:memories"
SECRET = "Patient 7 has a rare condition: SECRET-PURPLE-OCTOPUS"
TAIL = "octopus-tail-message"


def _bytes_hold(path: Path, needle: str) -> list[str]:
    """The files of a SQLite store (the file and its write-ahead log) whose bytes hold ``needle``."""
    found = []
    for name in (path, Path(f"{path}-wal")):
        if name.exists() and needle.encode() in name.read_bytes():
            found.append(name.name)
    return found


async def _sync(source: Replica, target: Replica) -> None:
    await target.apply(await source.export_since([U1], target.version_vectors([U1])))


async def _distinctive(replica: Replica) -> str:
    """A fact with a long history (snapshots of it are taken) and a conversation, both secret."""
    fact = await replica.add(SECRET, user_id="u1", metadata={"note": SECRET}, tags=["private"])
    for n in range(8):
        await replica.update(fact.id, content=f"{SECRET} (revision {n})")
    await replica.settle()
    return fact.id


async def test_forget_erases_everything_here_and_on_a_peer(tmp_path: Path) -> None:
    async with (
        Replica(tmp_path / "a.db", replica_id="a", snapshot_every=3) as a,
        Replica(tmp_path / "b.db", replica_id="b", snapshot_every=3) as b,
    ):
        memory_id = await _distinctive(a)
        kept = await a.add("an ordinary memory", user_id="u1")
        await _sync(a, b)
        await b.settle()
        assert (await b.get(memory_id)).content.startswith(SECRET)
        assert _bytes_hold(tmp_path / "b.db", "SECRET-PURPLE") or _bytes_hold(tmp_path / "a.db", "SECRET")

        await a.forget(memory_id)
        await _sync(a, b)

        for replica, name in ((a, "a.db"), (b, "b.db")):
            assert replica.forgotten(memory_id)
            with pytest.raises(NotFound):
                await replica.get(memory_id)
            with pytest.raises(NotFound):
                await replica.history(memory_id)
            assert [m.id for m in await replica.list(include_deleted=True)] == [kept.id]
            assert _bytes_hold(tmp_path / name, "SECRET-PURPLE") == []
            assert_forgotten_absent(replica, memory_id, [U1], ["SECRET-PURPLE"])
            assert_store_consistent(replica)
            # the log keeps the entries, without content: stubs and the marker
            history = replica.store.history(memory_id)
            assert any(is_marker(d.deps, d.update) for d in history)
            assert sum(d.update == EMPTY_UPDATE for d in history) == len(history) - 1
        assert_converged([a, b])
        # the id is spent: no new incarnation, no update
        with pytest.raises(NotFound):
            await a.add("again", user_id="u1", memory_id=memory_id)
        with pytest.raises(NotFound):
            await b.update(memory_id, content="again")
        with pytest.raises(NotFound):
            await a.forget(memory_id)


async def test_a_late_copy_from_an_old_peer_is_dropped_and_counted(tmp_path: Path) -> None:
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
        Replica(tmp_path / "old.db", replica_id="old") as old,
    ):
        memory = await a.add(SECRET, user_id="u1")
        await _sync(a, old)
        await old.update(memory.id, content=SECRET + " written offline")  # a's peers never saw this
        await a.forget(memory.id)
        await _sync(a, b)
        # the old peer comes back with the whole memory, its own write included
        stubs_before = b.erasure.counts["dropped"]  # a's stub came with the marker
        result = await b.apply(await old.export_since([U1]))
        # a's delta b holds already (as a stub); the old peer's own write is taken as a stub too
        assert (result.applied, result.duplicates, result.events) == (1, 1, ())
        assert b.erasure.counts["dropped"] == stubs_before + 1
        result = await a.apply(await old.export_since([U1], a.version_vectors([U1])))
        assert a.erasure.counts["dropped"] == 1
        for replica, name in ((a, "a.db"), (b, "b.db")):
            assert _bytes_hold(tmp_path / name, "SECRET-PURPLE") == []
            with pytest.raises(NotFound):
                await replica.get(memory.id)
        # and the old peer forgets it when the marker reaches it
        await _sync(b, old)
        assert old.forgotten(memory.id)
        assert _bytes_hold(tmp_path / "old.db", "SECRET-PURPLE") == []
        assert_converged([a, b, old])


async def test_a_peer_that_never_held_the_memory_catches_up_without_a_gap(tmp_path: Path) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a") as a, Replica(replica_id="late") as late:
        memory = await a.add(SECRET, user_id="u1")
        await a.update(memory.id, content=SECRET + "!")
        after = await a.add("written after", user_id="u1")
        await a.forget(memory.id)
        await _sync(a, late)
        # the stubs move the late peer's vector past the erased deltas: nothing left to ask for
        assert late.version_vectors([U1]) == a.version_vectors([U1])
        assert late.forgotten(memory.id)
        assert [m.id for m in await late.list()] == [after.id]
        assert_converged([a, late])


async def test_only_a_writer_of_the_memory_may_forget_it_remotely(tmp_path: Path) -> None:
    async with Replica(replica_id="a") as a, Replica(replica_id="b") as b:
        memory = await a.add(SECRET, user_id="u1")
        await _sync(a, b)
        await a.forget(memory.id)
        reader = Principal("reader", read=(U1,), write=(), origins=("*",))
        result = await b.apply_payload(
            __import__("crdtmem.engine.payload", fromlist=["decode"]).decode(
                await a.export_since([U1], b.version_vectors([U1]))
            ),
            sender=reader,
            isolate=True,
        )
        assert result.rejected == 1
        assert not b.forgotten(memory.id)
        assert (await b.get(memory.id)).content == SECRET
        assert b.erasure.counts["refused"] == 1


async def test_forget_removes_the_point_from_the_index(tmp_path: Path) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a", index=IndexSettings(engine="memory")) as a:
        memory = await a.add("the octopus lives in a purple cave", user_id="u1")
        other = await a.add("the weather is mild", user_id="u1")
        assert a.index is not None
        await a.index.wait_idle()
        assert memory.id in [r.memory.id for r in await a.search("purple octopus cave", user_id="u1")]
        await a.forget(memory.id)
        await a.index.wait_idle()
        assert memory.id not in a.index.engine.versions()
        assert await a.search("purple octopus cave", user_id="u1") == []  # the unrelated one is no hit
        assert [r.memory.id for r in await a.search("mild weather", user_id="u1")] == [other.id]
        assert (await a.index.verify()).ok


# -- the forgotten event -------------------------------------------------------------------------


async def _next(events: Subscription) -> MemoryEvent:
    event = await events.get(timeout=5)
    assert event is not None, "no event within 5 s"
    return event


def _assert_forgotten(event: MemoryEvent, memory: Memory, origin: str) -> None:
    """A ``forgotten`` event for ``memory``: its id and channels, nothing of its content."""
    assert (event.event_type, event.memory_id, event.channels) == ("forgotten", memory.id, memory.channels)
    assert event.memory is None and event.source is None and event.origin == origin
    assert event.version == int(event.event_id.rpartition(":")[2]) > memory.version
    data = event.to_dict()
    assert set(data) == {"event_id", "event_type", "timestamp", "memory_id", "channels", "origin"}
    assert "SECRET" not in json.dumps(data)
    datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00"))


async def test_forget_publishes_a_forgotten_event_without_content(tmp_path: Path) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a") as a:
        memory = await a.add(SECRET, user_id="u1", metadata={"note": SECRET}, tags=["private"])
        other_user = await a.add("someone else's", user_id="u2")
        everything, mine, theirs = a.events(), a.events([U1]), a.events(["user:u2:memories"])
        await a.forget(memory.id)
        forgotten = [await _next(stream) for stream in (everything, mine)]
        for event in forgotten:
            _assert_forgotten(event, memory, "a")
        assert await theirs.get(timeout=0.2) is None  # only subscribers of the memory's channels
        await a.update(other_user.id, content="changed")  # the feed goes on, in version order
        after = await _next(everything)
        assert (after.event_type, after.memory_id) == ("update", other_user.id)
        assert after.version == forgotten[0].version + 1


async def test_a_forget_from_a_peer_publishes_the_event_there_once(tmp_path: Path) -> None:
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
    ):
        memory = await a.add(SECRET, user_id="u1")
        await _sync(a, b)
        held = await b.get(memory.id)
        feed = b.events([U1])
        await a.forget(memory.id)
        await _sync(a, b)
        event = await _next(feed)
        _assert_forgotten(event, held, "a")
        assert event.event_id.startswith("b:")  # numbered by the replica that publishes it
        await b.apply(await a.export_since([U1]))  # the marker again: already forgotten, no event
        assert await feed.get(timeout=0.2) is None


@pytest.mark.parametrize("make", [MemoryStore, lambda path: SQLiteStore(path)], ids=["memory", "sqlite"])
def test_store_erase_keeps_the_log_entries_and_drops_the_rest(tmp_path: Path, make: object) -> None:
    import asyncio

    async def written() -> list:
        async with Replica(tmp_path / "w.db", replica_id="w") as w:
            memory = await w.add(SECRET, user_id="u1")
            await w.update(memory.id, content="v2")
            return w.store.history(memory.id)

    deltas = [
        __import__("dataclasses").replace(d, seqs={U1: n}, channels=(U1,))
        for n, d in enumerate(asyncio.run(written()), 1)
    ]
    store = make(tmp_path / "s.db") if make is not MemoryStore else MemoryStore()  # type: ignore[operator]
    store.open()
    try:
        store.commit([Commit(deltas=deltas)])
        (result,) = store.commit([Commit(erase=[deltas[0].doc_id])])
        assert store.is_erased(deltas[0].doc_id)
        assert store.erased_since(0) == [(deltas[0].doc_id, result.versions[deltas[0].doc_id])]
        assert store.version_vector(U1) == {"w": 2}
        exported = store.deltas_since([U1], {})
        assert [d.uid for d in exported] == [d.uid for d in deltas]
        assert all(d.update == EMPTY_UPDATE and d.signature is None for d in exported)
        assert store.load_record(deltas[0].doc_id) is None
        store.scrub()
    finally:
        store.close()


# -- real servers in separate processes --------------------------------------------------------


def _spawn(procs: list[ServerProcess], tmp: Path, rid: str, **kw: object) -> ServerProcess:
    proc = ServerProcess(tmp, rid, **kw)  # type: ignore[arg-type]
    procs.append(proc.start())
    return proc


async def test_forget_over_rest_erases_the_files_of_both_servers(procs, session, tmp_path: Path) -> None:
    a = _spawn(procs, tmp_path, "a", channels=[U1], extra=["--index"])
    b = _spawn(procs, tmp_path, "b", channels=[U1], peers=[a.url], extra=["--index"])
    api_a, api_b = Api(session, a.url), Api(session, b.url)
    memory = await api_a.add(SECRET, user_id="u1", metadata={"note": SECRET})
    chat = await api_a.add([], kind="conversation", user_id="u1")
    for n in range(5):
        await api_a.patch(chat["id"], append_message={"role": "user", "text": f"{TAIL} {n}"})
    kept = await api_a.add("an ordinary memory", user_id="u1")

    async def everywhere() -> bool:
        return all(
            [await api.get(m["id"]) is not None for api in (api_a, api_b) for m in (memory, chat, kept)]
        )

    await eventually(everywhere, what="a -> b")

    async def found(api: Api, query: str) -> list[str]:
        body = await api.call("POST", "/v1/search", {"query": query, "user_id": "u1", "limit": 10})
        return [r["memory"]["id"] for r in body["results"]]

    async def indexed() -> bool:
        return all([memory["id"] in await found(api, "purple octopus condition") for api in (api_a, api_b)])

    await eventually(indexed, what="indexed on both")
    for proc in (a, b):  # the bytes are there to begin with (in the file or its write-ahead log)
        assert _bytes_hold(proc.db, "SECRET-PURPLE") and _bytes_hold(proc.db, TAIL)

    assert await api_a.call("DELETE", f"/v1/memories/{memory['id']}?purge=true") == {
        "id": memory["id"],
        "forgotten": True,
    }
    await api_b.call("DELETE", f"/v1/memories/{chat['id']}?purge=true")  # from the other side too

    async def gone() -> bool:
        for api in (api_a, api_b):
            for m in (memory, chat):
                if await api.get(m["id"]) is not None:
                    return False
        return True

    await eventually(gone, what="forgotten on both")

    async def erased_from_files() -> bool:
        return not any(_bytes_hold(proc.db, needle) for proc in (a, b) for needle in ("SECRET-PURPLE", TAIL))

    await eventually(erased_from_files, what="the bytes leave both files")
    for api in (api_a, api_b):
        assert memory["id"] not in await found(api, "purple octopus condition")
        assert await api.get(kept["id"]) is not None
        await api.call("GET", f"/v1/memories/{memory['id']}/history", expect=404)
    # the bytes stay gone once the servers stop (the files closed, the logs folded in)
    for proc in (a, b):
        proc.stop()
        assert not _bytes_hold(proc.db, "SECRET-PURPLE") and not _bytes_hold(proc.db, TAIL)


async def test_an_event_stream_on_a_peer_sees_the_forget(procs, session, tmp_path: Path) -> None:
    """An SSE subscriber of server b learns that a memory forgotten on server a is gone, with no
    content in the event, and can resume right after it."""
    a = _spawn(procs, tmp_path, "a", channels=[U1])
    b = _spawn(procs, tmp_path, "b", channels=[U1], peers=[a.url])
    api_a, api_b = Api(session, a.url), Api(session, b.url)
    memory = await api_a.add(SECRET, user_id="u1", metadata={"note": SECRET})
    await eventually(lambda: _held(api_b, memory["id"]), what="a -> b")

    async with session.get(f"{b.url}/v1/events?channel={U1}") as stream:
        await api_a.call("DELETE", f"/v1/memories/{memory['id']}?purge=true")
        message = await _sse_until(stream, "forgotten")
    data = json.loads(message["data"])
    assert (data["event_type"], data["memory_id"], data["channels"]) == ("forgotten", memory["id"], [U1])
    assert data["origin"] == "a" and message["id"] == data["event_id"] and data["event_id"].startswith("b:")
    assert "memory" not in data and "source" not in data and "SECRET" not in message["data"]

    # resuming right after the forgotten event is no reset (its version is the node's newest): the
    # first event is the memory written next, live ("create") or, when its commit lands before the
    # stream reads its replay, replayed as its current state ("update"), once either way
    headers = {"Last-Event-ID": data["event_id"]}
    async with session.get(f"{b.url}/v1/events?channel={U1}", headers=headers) as stream:
        added = await api_b.add("after the forget", user_id="u1")
        message = await _sse_next(stream)
    assert message["event"] in ("create", "update"), message
    event = json.loads(message["data"])
    assert (event["memory"]["id"], event["memory"]["content"]) == (added["id"], "after the forget")


async def _held(api: Api, memory_id: str) -> bool:
    return await api.get(memory_id) is not None


async def _sse_until(stream: Any, event_type: str) -> dict[str, str]:
    """The next SSE message of ``event_type`` (failing on a reset, or after 10 s)."""
    async with asyncio.timeout(10):
        while True:
            message = await _sse_next(stream)
            assert message["event"] != "reset", message
            if message["event"] == event_type:
                return message


async def _sse_next(stream: Any) -> dict[str, str]:
    """The next SSE message that names an event (comments are skipped), within 10 s."""
    message: dict[str, str] = {}
    async with asyncio.timeout(10):
        async for raw in stream.content:
            line = raw.decode().rstrip("\n")
            if line:
                name, _, value = line.partition(": ")
                message[name] = value
                continue
            if "event" in message:
                return message
            message = {}
    raise AssertionError("the stream ended before its next event")


async def test_a_stub_travels_with_its_marker_and_is_refused_without_it(tmp_path: Path) -> None:
    """A page that holds only a stub carries the memory's erase marker too; the stub alone, from a
    sender that may relay its origin, is refused as forged and moves no vector."""
    async with Replica(replica_id="a") as a, Replica(replica_id="b") as b:
        memory = await a.add(SECRET, user_id="u1")
        await a.forget(memory.id)
        page = wire.decode(await a.export_since([U1], {}, limit=1))
        assert [is_marker(d.deps, d.update) for d in page.deltas] == [True, False]
        stub_alone = dataclasses.replace(page, deltas=page.deltas[1:])
        relay = Principal("replica:relay", read=(U1,), write=(U1,), origins=("*",), unsigned=("*",))
        result = await b.apply_payload(stub_alone, sender=relay, isolate=True)
        assert (result.applied, result.unauthenticated) == (0, 1)
        assert b.version_vectors([U1]) == {U1: {}} and b.erasure.counts["forged"] == 1
        result = await b.apply_payload(page, sender=relay, isolate=True)
        assert (result.applied, result.unauthenticated) == (2, 0)
        assert b.forgotten(memory.id)
        assert b.version_vectors([U1]) == a.version_vectors([U1])


async def test_a_full_copy_of_a_forgotten_memory_must_be_signed_by_its_origin(tmp_path: Path) -> None:
    """A late copy of a forgotten memory's delta is taken as a stub only if it authenticates: a
    relay cannot log entries of an origin under a forgotten memory with a copy it made up."""
    async with Replica(replica_id="a") as a, Replica(replica_id="b") as b:
        memory = await a.add(SECRET, user_id="u1")
        await a.update(memory.id, content="late edit")
        full = wire.decode(await a.export_since([U1], {}))
        await a.forget(memory.id)
        await _sync(a, b)
        assert b.forgotten(memory.id)
        forged = dataclasses.replace(full.deltas[1], uid="a:forged", signature=None, seqs={U1: 9})
        relay = Principal("replica:relay", read=(U1,), write=(U1,), origins=("*",))
        result = await b.apply_payload(wire.Payload("relay", [forged]), sender=relay, isolate=True)
        assert result.unauthenticated == 1 and not b.store.is_logged(U1, "a", 9)


async def test_a_stub_is_its_origins_word_and_cannot_stand_for_another_memorys_delta() -> None:
    """A stub keeps its origin's header signature: a relay that may not vouch for unsigned deltas
    passes honest stubs on, but cannot present another memory's delta as a stub of the forgotten
    one (with no signature, or with a signature of another stub), so that delta still applies."""
    relay = Principal("replica:relay", read=(U1,), write=(U1,), origins=("*",))
    async with Replica(replica_id="a") as a, Replica(replica_id="b") as b, Replica(replica_id="c") as c:
        secret = await a.add(SECRET, user_id="u1")
        other = await a.add("another memory", user_id="u1")
        await a.forget(secret.id)
        page = wire.decode(await a.export_since([U1], {}))
        (marker,) = [d for d in page.deltas if is_marker(d.deps, d.update)]
        (stub,) = [d for d in page.deltas if d.update == EMPTY_UPDATE]
        (kept,) = [d for d in page.deltas if d.doc_id == other.id]
        assert is_marker(marker.deps, marker.update) and stub.header is not None and kept.doc_id == other.id
        result = await b.apply_payload(page, sender=relay, isolate=True)
        assert (result.applied, result.unauthenticated) == (3, 0)
        assert b.version_vectors([U1]) == a.version_vectors([U1])

        as_stub = dataclasses.replace(
            kept, doc_id=secret.id, deps=stub.deps, update=stub.update, signature=None
        )
        for forged in (as_stub, dataclasses.replace(as_stub, header=stub.header)):
            payload = wire.Payload("relay", [marker, forged], {}, page.keys)
            result = await c.apply_payload(payload, sender=relay, isolate=True)
            assert result.unauthenticated == 1 and not c.store.is_logged(U1, "a", kept.seqs[U1])
        result = await c.apply_payload(
            wire.Payload("relay", [kept], {}, page.keys), sender=relay, isolate=True
        )
        assert result.applied == 1 and (await c.get(other.id)).content == "another memory"
