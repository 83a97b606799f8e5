"""Log compaction behind a horizon: what every known peer holds folds into snapshots; a lease holds
the horizon for a peer that is away; a peer behind the horizon catches up from document states."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from crdtmem import Replica
from crdtmem.store.base import Commit
from crdtmem.store.memory import MemoryStore
from crdtmem.store.sqlite import SQLiteStore
from crdtmem.testing import assert_converged, assert_store_consistent

U1 = "user:u1:memories"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000_000

    def __call__(self) -> int:
        return self.now


async def _sync(source: Replica, target: Replica) -> None:
    await target.apply(await source.export_since([U1], target.version_vectors([U1])))


async def _busy(replica: Replica, updates: int = 30) -> list[str]:
    fact = await replica.add("v0", user_id="u1")
    for n in range(updates):
        await replica.update(fact.id, content=f"v{n + 1}")
    chat = await replica.add(kind="conversation", user_id="u1")
    for n in range(updates):
        await replica.append_message(chat.id, role="user", text=f"message {n}")
    return [fact.id, chat.id]


async def test_entries_every_peer_holds_fold_and_a_peer_behind_catches_up_from_states(tmp_path: Path) -> None:
    async with (
        Replica(tmp_path / "a.db", replica_id="a", snapshot_every=10) as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
    ):
        ids = await _busy(a)
        a.acknowledged("b", {U1: {}})  # b syncs this channel (a node learns it as b connects)
        await _sync(a, b)
        assert (await a.compact()).folded == {}, "b has not acknowledged anything yet"
        await _sync(b, a)  # a learns what b holds (the payload's vectors)
        done = await a.compact()
        assert done.folded == {U1: {"a": 62}}
        assert a.store.horizon(U1) == {"a": 62}
        assert a.store.history(ids[0]) == []  # the log no longer holds them; the snapshot does
        assert (await a.get(ids[1])).content[-1]["text"] == "message 29"
        await a.update(ids[0], content="after the fold")
        await _sync(a, b)  # b is past the horizon: plain deltas
        assert (await b.get(ids[0])).content == "after the fold"

        async with Replica(tmp_path / "c.db", replica_id="c") as c:  # a new peer, from nothing
            page = await a.export_since([U1], c.version_vectors([U1]))
            assert page[:64].find(b"crdtmem.states") >= 0  # never a silent skip
            result = await c.apply(page)
            assert result.applied == 2
            assert c.version_vectors([U1]) == a.version_vectors([U1])
            assert c.store.horizon(U1) == {"a": 63}  # it holds those entries only in states
            for r in (a, b, c):
                assert_store_consistent(r)
            assert_converged([a, b, c])
            # and c can serve a peer behind it in turn
            async with Replica(replica_id="d") as d:
                await d.apply(await c.export_since([U1], {}))
                assert_converged([a, d])


async def test_a_lease_holds_the_horizon_until_it_expires(tmp_path: Path) -> None:
    clock = Clock()
    kw = {"wall_clock": clock, "lease_ms": 60_000, "retention_ms": 10_000}
    async with (
        Replica(tmp_path / "a.db", replica_id="a", **kw) as a,  # type: ignore[arg-type]
        Replica(tmp_path / "phone.db", replica_id="phone", **kw) as phone,  # type: ignore[arg-type]
    ):
        await a.add("first", user_id="u1")
        await _sync(a, phone)
        await _sync(phone, a)  # the phone holds a:1, and has a lease
        clock.now += 1_000
        for n in range(5):
            await a.add(f"while the phone is away {n}", user_id="u1")
        clock.now += 30_000  # past the retention, within the lease
        assert (await a.compact()).folded == {U1: {"a": 1}}  # only what the phone holds
        clock.now += 60_000  # the lease ran out: the retention decides
        assert (await a.compact()).folded == {U1: {"a": 6}}
        # the phone comes back behind the horizon and catches up from states
        page = await a.export_since([U1], phone.version_vectors([U1]))
        assert b"crdtmem.states" in page[:64]
        await phone.apply(page)
        assert_converged([a, phone])
        assert len(await phone.list(user_id="u1")) == 6


async def test_compaction_survives_a_restart_and_never_reuses_a_row_id(tmp_path: Path) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a", snapshot_every=5) as a:
        ids = await _busy(a, 12)
        await a.compact()  # no peer known: everything contiguous folds
        assert a.store.horizon(U1) == {"a": 26}
    async with Replica(tmp_path / "a.db", snapshot_every=5) as again:
        await again.update(ids[0], content="after restart")
        await again.append_message(ids[1], role="user", text="after restart")
        assert (await again.get(ids[0])).content == "after restart"
        assert_store_consistent(again)
    async with Replica(tmp_path / "a.db") as third:  # the new deltas are read back as a tail
        assert (await third.get(ids[0])).content == "after restart"
        assert (await third.get(ids[1])).content[-1]["text"] == "after restart"


async def test_forgotten_memories_markers_survive_compaction(tmp_path: Path) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a") as a:
        gone = await a.add("SECRET-PURPLE-OCTOPUS", user_id="u1")
        kept = await a.add("kept", user_id="u1")
        await a.forget(gone.id)
        await a.compact()
        assert a.store.horizon(U1) == {"a": 3}
        async with Replica(replica_id="late") as late:
            await late.apply(await a.export_since([U1], {}))
            assert late.forgotten(gone.id)
            assert [m.id for m in await late.list()] == [kept.id]


@pytest.mark.parametrize("make", ["memory", "sqlite"])
def test_store_fold_stops_below_a_tail_and_keeps_what_others_reference(tmp_path: Path, make: str) -> None:
    import asyncio
    import dataclasses

    async def written() -> list:
        async with Replica(tmp_path / "w.db", replica_id="w") as w:
            m = await w.add("x", user_id="u1")
            await w.update(m.id, content="y")
            return w.store.history(m.id)

    deltas = [
        dataclasses.replace(d, seqs={U1: n}, channels=(U1,)) for n, d in enumerate(asyncio.run(written()), 1)
    ]
    store = MemoryStore() if make == "memory" else SQLiteStore(tmp_path / "s.db")
    store.open()
    try:
        store.commit([Commit(deltas=deltas)])
        # no snapshot of the document yet: nothing folds (its record is not even stored)
        store.commit([Commit(fold={U1: {"w": 2}})])
        assert store.horizon(U1) == {}
        assert len(store.deltas_since([U1], {})) == 2
        assert store.fold_blockers({U1: {"w": 2}}) == [deltas[0].doc_id]
    finally:
        store.close()


# -- real servers in separate processes --------------------------------------------------------


def test_crdtmem_compact_folds_a_stopped_nodes_file(tmp_path: Path) -> None:
    import asyncio
    import json
    import subprocess
    import sys

    async def write() -> None:
        async with Replica(tmp_path / "n.db", replica_id="n") as n:
            await _busy(n, 40)

    asyncio.run(write())
    done = subprocess.run(
        [sys.executable, "-m", "crdtmem", "compact", "--db", str(tmp_path / "n.db"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["horizon"] == {U1: {"n": 82}}


async def test_a_node_behind_the_horizon_catches_up_over_http(procs, session, tmp_path: Path) -> None:
    from tests.support.processes import ServerProcess
    from tests.support.rest import Api, eventually

    a = ServerProcess(tmp_path, "a", channels=[U1], extra=["--compact-every", "0.3"])
    procs.append(a.start())
    api_a = Api(session, a.url)
    ids = [(await api_a.add(f"fact {n}", user_id="u1"))["id"] for n in range(20)]
    for n in range(10):
        await api_a.patch(ids[0], content=f"fact 0, rewritten {n}")

    async def folded() -> bool:
        status = await api_a.status()
        return status["compaction"]["horizon"].get(U1, {}).get("a", 0) >= 30

    await eventually(folded, what="a compacts its log (no peer known: everything folds)")
    late = ServerProcess(tmp_path, "late", channels=[U1], peers=[a.url])
    procs.append(late.start())
    api_late = Api(session, late.url)

    async def caught_up() -> bool:
        status = await api_late.status()
        return (
            status["version_vectors"].get(U1, {}).get("a", 0) >= 30 and len(await api_late.memories()) == 20
        )

    await eventually(caught_up, what="the late node catches up from states")
    assert (await api_late.get(ids[0]))["content"] == "fact 0, rewritten 9"
    assert (await api_late.status())["compaction"]["horizon"][U1]["a"] >= 30
    # and keeps syncing deltas after that
    await api_a.patch(ids[1], content="after the catch-up")

    async def follows() -> bool:
        memory = await api_late.get(ids[1])
        return memory is not None and memory["content"] == "after the catch-up"

    await eventually(follows, what="deltas after the catch-up")
    # what late pulled and what it pushes are one peer's acknowledgements: one lease, one mark
    await api_late.add("written on late", user_id="u1")

    async def pushed() -> bool:
        return any(m["content"] == "written on late" for m in await api_a.memories())

    await eventually(pushed, what="late's write reaches a")
    assert set((await api_a.status())["compaction"]["peers"]) == {"late"}


async def test_a_node_goes_on_compacting_after_an_unexpected_failure(tmp_path, caplog) -> None:
    from crdtmem.server.node import Node

    replica = Replica(tmp_path / "a.db", replica_id="a")
    calls = 0
    compact = replica.compact

    async def flaky_compact():  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("a bug in one compaction")
        return await compact()

    replica.compact = flaky_compact  # type: ignore[method-assign]
    async with Node(replica, compact_every=0.05) as node:
        for _ in range(400):
            if calls >= 3:
                break
            await asyncio.sleep(0.01)
        assert calls >= 3, "compaction stopped after the failure"
        assert node.metrics.value("crdtmem_compaction_errors_total") == 1
        assert node.metrics.value("crdtmem_compactions_total") >= 2
    assert "compaction failed unexpectedly" in caplog.text
