"""The search index against the store: scope filters, exact agreement after randomized multi-replica
runs with conflicts and deletes, restarts, crash repair, model changes, and REST search."""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from crdtmem import CrdtmemError, InvalidInput, Replica
from crdtmem.access import TokenTable
from crdtmem.index import IndexSettings, Point
from crdtmem.index.embedders import HashingEmbedder
from crdtmem.index.engines import open_engine
from crdtmem.index.indexer import (
    EMBEDDED_CONTENT_CHARS,
    EMBEDDED_EXTRA_CHARS,
    Indexer,
    memory_text,
    text_hash,
)
from crdtmem.server import Node

U1, U2 = "user:u1:memories", "user:u2:memories"
ROOT = Path(__file__).resolve().parent.parent


def settings(engine: str = "memory", **kw) -> IndexSettings:
    return IndexSettings(engine=engine, **kw)


View = dict[str, tuple[int, bool, bool, str, str]]


async def _store_view(replica: Replica) -> View:
    """{id: (version, deleted, conflicted, model, text hash)}: what the index must hold, from the
    store and the embedder alone."""
    assert replica.index is not None
    model = replica.index.embedder.model
    return {
        m.id: (m.version, m.deleted, m.conflicted, model, text_hash(memory_text(m)))
        for m in await replica.list(include_deleted=True)
        if not m.deleted or m.conflicted
    }


async def _index_view(replica: Replica) -> View:
    """The same, read from what the engine holds (its points' payloads), not from the store."""
    assert replica.index is not None
    stored = await asyncio.to_thread(replica.index.engine.payloads)
    return {
        i: (p["version"], p["deleted"], p["conflicted"], p["model"], p["text_hash"])
        for i, p in stored.items()
    }


async def test_search_respects_every_scope_filter(tmp_path: Path) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a", index=settings()) as r:
        await r.add("User prefers dark mode in every app", user_id="u1", tags=["ui"], topics=["design"])
        await r.add("User prefers dark mode too", user_id="u2", tags=["ui"])
        await r.add("Company style guide: dark mode by default", tenant_id="acme", shared=True)
        await r.add(["dark chocolate", "coffee"], kind="list", user_id="u1", tags=["food"])
        assert r.index is not None
        await r.index.wait_idle()

        def ids(results):
            return {x.memory.scope.user_id or x.memory.scope.tenant_id for x in results}

        assert ids(await r.search("dark mode", user_id="u1")) == {"u1"}
        assert ids(await r.search("dark mode", user_id="u2")) == {"u2"}
        assert ids(await r.search("dark mode", tenant_id="acme")) == {"acme"}
        assert ids(await r.search("dark mode", filters={"user_id": "u2"})) == {"u2"}
        kinds = {x.memory.kind for x in await r.search("dark", user_id="u1", kind="list")}
        assert kinds == {"list"}
        tagged = await r.search("dark", tags=["food"])
        assert [x.memory.kind for x in tagged] == ["list"]
        topical = await r.search("dark mode", topic="design")
        assert len(topical) == 1 and topical[0].memory.scope.user_id == "u1"
        only_u2 = await r.search("dark mode", channels=[U2])
        assert ids(only_u2) == {"u2"}
        best = await r.search("dark mode apps", user_id="u1", limit=1)
        assert best[0].memory.content == "User prefers dark mode in every app"
        assert best[0].score > 0
        with pytest.raises(InvalidInput):
            await r.search("", user_id="u1")
        with pytest.raises(InvalidInput):
            await r.search("x", filters={"colour": {"redder": "red"}})


async def test_search_without_index_is_a_clear_error() -> None:
    async with Replica(None, replica_id="bare") as r:
        with pytest.raises(InvalidInput, match="index=True"):
            await r.search("anything")


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_index_matches_store_after_randomized_multi_replica_run(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    names = ["a", "b", "c"]
    replicas = [await Replica(tmp_path / f"{n}.db", replica_id=n, index=settings()).start() for n in names]
    try:
        ids: list[str] = []
        for step in range(120):
            r = rng.choice(replicas)
            action = rng.random()
            if action < 0.25 or not ids:
                m = await r.add(f"fact {step} about {rng.choice(['tea', 'code', 'maps'])}", user_id="u1")
                ids.append(m.id)
            elif action < 0.7:
                target = rng.choice(ids)
                with contextlib.suppress(CrdtmemError):  # not there yet, or deleted: fine
                    await r.update(target, content=f"changed at {step} by {r.id}")
            elif action < 0.8:
                target = rng.choice(ids)
                with contextlib.suppress(CrdtmemError):
                    await r.delete(target)
            else:
                source, target_replica = rng.sample(replicas, 2)
                await target_replica.apply(await source.export_since(U1, target_replica.version_vector(U1)))
        for _ in range(2):  # full exchange: everyone converges
            for source in replicas:
                for target_replica in replicas:
                    if source is not target_replica:
                        await target_replica.apply(
                            await source.export_since(U1, target_replica.version_vector(U1))
                        )
        conflicted = 0
        for r in replicas:
            assert r.index is not None
            await r.index.wait_idle()
            assert await _index_view(r) == await _store_view(r)
            report = await r.index.verify()
            assert report.ok, report
            conflicted += sum(1 for m in await r.list(include_deleted=True) if m.conflicted)
        assert conflicted > 0, "the run should have produced conflicts"
    finally:
        for r in replicas:
            await r.stop()


class _ChangesAfterRead:
    """The replica's store as an indexer's source, which, once armed, lets the replica commit an
    update and then a forget right after the indexer read a batch of records (on its worker thread)
    and before it reads the erasures beside them."""

    def __init__(self, replica: Replica, changes: Callable[[], Awaitable[None]]):
        self._store = replica.store
        self._loop = asyncio.get_running_loop()
        self._changes = changes
        self.armed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def query_records(self, **kw: Any) -> list[dict[str, Any]]:
        records = self._store.query_records(**kw)
        if self.armed and kw.get("ascending"):
            self.armed = False
            asyncio.run_coroutine_threadsafe(self._changes(), self._loop).result(30)
        return records


async def test_an_erasure_read_after_a_batch_never_moves_the_mark_past_a_change_the_batch_missed(
    tmp_path: Path,
) -> None:
    """The records of a batch and the erasures beside them are two reads; a change committed between
    them (after the records, below an erasure the second read finds) is indexed, not skipped."""
    async with Replica(tmp_path / "a.db", replica_id="a") as replica:
        kept = await replica.add("kept", user_id="u1")
        doomed = await replica.add("forgotten later", user_id="u1")

        async def update_then_forget() -> None:
            await replica.update(kept.id, content="kept, changed")
            await replica.forget(doomed.id)

        source = _ChangesAfterRead(replica, update_then_forget)
        engine = open_engine("memory", None, collection="t")
        indexer = Indexer(source, replica.on_commit, engine, HashingEmbedder(), settle=replica.settle)
        async with indexer as index:
            await index.wait_idle()
            source.armed = True
            await replica.add("a third memory", user_id="u1")  # wakes the indexer: its batch is armed
            await index.wait_idle()
            assert not source.armed
            changed = await replica.get(kept.id)
            assert changed.content == "kept, changed"
            held = await asyncio.to_thread(engine.versions)
            assert held.get(kept.id) == changed.version, "the update committed between the reads was skipped"
            assert doomed.id not in held
            report = await index.verify()
            assert report.ok, report


class _HeldUpsert:
    """A real engine whose next upsert, once armed, waits on its worker thread until released."""

    def __init__(self, engine: Any):
        self._engine = engine
        self._armed = False
        self._release = threading.Event()
        self.holding = threading.Event()
        self.landed = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def arm(self) -> None:
        self._armed = True

    def release(self) -> None:
        self._release.set()

    def upsert(self, points: Any) -> int:
        if not self._armed:
            return self._engine.upsert(points)
        self._armed = False
        self.holding.set()
        self._release.wait(30)
        try:
            return self._engine.upsert(points)
        finally:
            self.landed.set()


class _WholeReads:
    """The replica's store as an indexer's source, noting when the whole store is read (rebuild)."""

    def __init__(self, replica: Replica):
        self._store = replica.store
        self.read_whole = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def query_records(self, **kw: Any) -> list[dict[str, Any]]:
        if kw.get("since_version") is None and kw.get("limit") is None:
            self.read_whole = True
        return self._store.query_records(**kw)


@pytest.mark.parametrize("removal", ["delete", "forget"])
async def test_rebuild_waits_for_the_upsert_in_flight_before_it_reads_and_deletes(
    tmp_path: Path, removal: str
) -> None:
    """rebuild() stops the indexing task while a batch's upsert runs on a worker thread; the upsert
    lands before rebuild reads the store and deletes points, not after, where it would bring back the
    point of a memory deleted or forgotten meanwhile (with the mark past the removal: for good)."""
    async with Replica(tmp_path / "a.db", replica_id="a") as replica:
        doomed = await replica.add("removed while its batch upserts", user_id="u1")
        other = await replica.add("changed after the removal", user_id="u1")
        source = _WholeReads(replica)
        engine = _HeldUpsert(open_engine("edge", tmp_path / "index", collection="t"))
        indexer = Indexer(source, replica.on_commit, engine, HashingEmbedder(), settle=replica.settle)
        async with indexer as index:
            await index.wait_idle()
            engine.arm()
            await replica.update(doomed.id, content="changed, then removed")
            assert await asyncio.to_thread(engine.holding.wait, 30), "the batch never upserted"
            await (replica.delete if removal == "delete" else replica.forget)(doomed.id)
            await replica.update(other.id, content="changed after the removal, again")
            rebuilding = asyncio.create_task(index.rebuild())
            for _ in range(20):  # without waiting, rebuild reads the store a few loop steps after
                await asyncio.sleep(0)  # it cancelled the task, with no worker thread between
            if source.read_whole:  # it went ahead: the held upsert lands after all of rebuild
                await rebuilding
            engine.release()
            await rebuilding
            assert await asyncio.to_thread(engine.landed.wait, 30)
            await index.wait_idle()
            held = await asyncio.to_thread(engine.versions)
            assert doomed.id not in held, f"the point of a memory {removal} removed came back"
            report = await index.verify()
            assert report.ok, report


async def test_restart_keeps_the_index_consistent(tmp_path: Path) -> None:
    engine = settings("qdrant-local")
    async with Replica(tmp_path / "a.db", replica_id="a", index=engine) as r:
        for i in range(20):
            await r.add(f"note {i}", user_id="u1")
        assert r.index is not None
        await r.index.wait_idle()
        before = await _index_view(r)
    async with Replica(tmp_path / "a.db", replica_id="a", index=engine) as r:
        assert r.index is not None
        await r.index.wait_idle()
        assert await _index_view(r) == before
        assert (await r.index.verify()).ok
        hits = await r.search("note 7", user_id="u1")
        assert hits and hits[0].memory.content == "note 7"


CRASHER = Path(__file__).parent / "helpers" / "index_crash.py"


@pytest.mark.parametrize("engine", ["edge", "qdrant-local"])
async def test_a_process_killed_between_store_commit_and_index_upsert_is_repaired(
    tmp_path: Path, engine: str
) -> None:
    """A real process commits writes and is SIGKILLed while its indexer holds them, before the
    upsert (its embedder blocks on them); on the next start the index catches up from its mark."""
    db = tmp_path / "a.db"
    proc = subprocess.Popen(
        [sys.executable, str(CRASHER), str(db), engine], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        lines = {}
        assert proc.stdout is not None
        for line in proc.stdout:
            word, _, rest = line.strip().partition(" ")
            lines[word] = rest
            if word == "embedding":  # the indexer is between the commit and the upsert now
                break
        assert {"kept", "late", "deleted", "embedding"} <= set(lines), lines
    finally:
        proc.kill()
        proc.communicate()
    kept, late = lines["kept"], lines["late"]
    index = IndexSettings(engine=engine)
    async with Replica(db, replica_id="a") as plain:  # the crash state, before any repair
        mark = int(plain.store.get_meta("index:crdtmem-384:version") or 0)
        assert mark < (await plain.get(late)).version, "the late write was indexed before the kill"
    held = open_engine(engine, f"{db}.index", collection="crdtmem-384")
    held.ensure_collection(384)
    assert late not in held.versions() and kept in held.versions()
    held.close()
    async with Replica(db, replica_id="a", index=index) as r:
        assert r.index is not None
        await r.index.wait_idle()
        report = await r.index.verify()
        assert report.ok, report
        assert await _index_view(r) == await _store_view(r)
        found = {x.memory.id for x in await r.search("never indexed", user_id="u1")}
        assert late in found and kept not in found


async def test_verify_finds_stale_orphan_and_mismatched_points_and_rebuild_repairs_them(
    tmp_path: Path,
) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a", index=settings("qdrant-local")) as r:
        made = [await r.add(f"item {i}", user_id="u1") for i in range(6)]
        await r.update(made[0].id, content="item 0, changed")  # version above its first point's
        gone = await r.add("deleted later", user_id="u1")
        assert r.index is not None
        await r.index.wait_idle()
        assert (await r.index.verify()).ok
        engine = r.index.engine
        points = await asyncio.to_thread(engine.payloads)
        vector = r.index.embedder.embed(["x"])[0]

        def rewrite(point_id: str, **fields: object) -> Point:
            return Point(point_id, vector, {**points.get(point_id, points[made[1].id]), **fields})

        await r.delete(gone.id)
        await r.index.wait_idle()  # its point left the index; one written back below is an orphan
        stale = rewrite(made[0].id, version=points[made[0].id]["version"] - 1)
        await asyncio.to_thread(engine.delete, [made[0].id])  # an engine never takes a stale upsert
        await asyncio.to_thread(
            engine.upsert,
            [
                stale,
                rewrite(gone.id),
                rewrite("no-such-memory", memory_id="no-such-memory", version=1),
                rewrite(made[2].id, conflicted=True),
                rewrite(made[3].id, model="another/model"),
                rewrite(made[4].id, text_hash="0" * 32),
            ],
        )
        await asyncio.to_thread(engine.delete, [made[5].id])
        report = await r.index.verify()
        assert report.missing == (made[5].id,)
        assert report.stale == (made[0].id,)
        assert set(report.orphans) == {"no-such-memory", gone.id}
        assert set(report.mismatched) == {made[2].id, made[3].id, made[4].id}
        assert not report.ok
        fixed = await r.index.rebuild()
        assert fixed.ok, fixed
        assert "no-such-memory" not in await asyncio.to_thread(engine.versions), "rebuild left an orphan"
        assert await _index_view(r) == await _store_view(r)


async def test_changing_the_model_reembeds_everything(tmp_path: Path) -> None:
    class Renamed(HashingEmbedder):
        model = "test/renamed-hashing"

    async with Replica(tmp_path / "a.db", replica_id="a", index=settings("qdrant-local")) as r:
        for i in range(5):
            await r.add(f"memory {i}", user_id="u1")
        assert r.index is not None
        await r.index.wait_idle()
        first = r.index.points_written
    async with Replica(
        tmp_path / "a.db", replica_id="a", index=settings("qdrant-local", embedder=Renamed())
    ) as r:
        assert r.index is not None
        await r.index.wait_idle()
        assert r.index.points_written == first == 5
        assert r.index.status()["model"] == "test/renamed-hashing"


async def test_reindex_rebuilds_and_verifies(tmp_path: Path) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a", index=settings("qdrant-local")) as r:
        for i in range(30):
            await r.add(f"item {i}", user_id="u1")
        assert r.index is not None
        await r.index.wait_idle()
        await asyncio.to_thread(r.index.engine.delete, [m.id for m in await r.list(limit=5)])
        broken = await r.index.verify()
        assert len(broken.missing) == 5 and not broken.ok
        seen = []
        fixed = await r.index.rebuild(lambda done, total: seen.append((done, total)))
        assert fixed.ok and seen[-1] == (30, 30)


async def test_rest_search_is_scoped_to_the_caller(tmp_path: Path) -> None:
    tokens = TokenTable.from_json(
        {
            "tokens": [
                {"token": "u1-agent-token-000001", "principal": "user:a1", "read": [U1], "write": [U1]},
                {"token": "u2-agent-token-000002", "principal": "user:a2", "read": [U2], "write": [U2]},
                {
                    "token": "admin-token-000000003",
                    "principal": "user:adm",
                    "read": ["user:*:memories"],
                    "write": [],
                },
                {"token": "operator-token-000004", "principal": "user:ops", "read": ["*"], "write": []},
            ]
        }
    )
    replica = Replica(tmp_path / "a.db", replica_id="a", index=settings())
    async with Node(replica, tokens=tokens) as node, aiohttp.ClientSession() as session:
        await replica.add("u1 likes green tea", user_id="u1")
        await replica.add("u2 likes green tea", user_id="u2")
        assert replica.index is not None
        await replica.index.wait_idle()

        async def search(token: str, body: dict) -> tuple[int, dict]:
            async with session.post(
                f"{node.url}/v1/search", json=body, headers={"Authorization": f"Bearer {token}"}
            ) as response:
                return response.status, await response.json()

        status, body = await search("u1-agent-token-000001", {"query": "green tea"})
        assert status == 200 and {r["memory"]["scope"]["user_id"] for r in body["results"]} == {"u1"}
        status, body = await search("u1-agent-token-000001", {"query": "green tea", "user_id": "u2"})
        assert status == 200 and body["results"] == []
        status, body = await search("admin-token-000000003", {"query": "green tea", "limit": 5})
        assert status == 200 and body["count"] == 2
        status, body = await search("u1-agent-token-000001", {"query": "tea", "bogus": 1})
        assert status == 400 and "bogus" in body["message"]
        status, body = await search("u1-agent-token-000001", {"query": 5})
        assert status == 400
        async with session.get(
            f"{node.url}/v1/status", headers={"Authorization": "Bearer u1-agent-token-000001"}
        ) as r:
            assert "index" not in await r.json()  # node-wide state is for tokens that read everything
        async with session.get(
            f"{node.url}/v1/status", headers={"Authorization": "Bearer operator-token-000004"}
        ) as r:
            status_body = await r.json()
        index_status = status_body["index"]
        assert index_status["lag_versions"] == 0 and index_status["last_error"] is None
        assert (index_status["engine"], index_status["model"]) == ("memory", "crdtmem/hashing-384-v1")
        assert index_status["indexed_version"] == max(m.version for m in await replica.list())
        assert index_status["points_written"] == 2


async def test_a_large_memory_is_embedded_by_a_bounded_text_that_keeps_its_tags(tmp_path: Path) -> None:
    """A 1 MiB value costs the embedder what 8 KiB does (it runs in Python beside the event loop);
    its tags and metadata are still embedded."""
    async with Replica(tmp_path / "a.db", replica_id="a", index=settings()) as replica:
        big = await replica.add("x" * (1024 * 1024), user_id="u1", tags=["zebra"], metadata={"n": "okapi"})
        small = await replica.add("green tea", user_id="u1", tags=["zebra"])
        for _ in range(3):  # the indexer's batches end early at 2 MiB of records: it reads on
            await replica.add("y" * (1024 * 1024), user_id="u1")
        later = await replica.add("after the large ones", user_id="u1")
        text = memory_text(big)
        assert len(text) <= EMBEDDED_CONTENT_CHARS + 1 + EMBEDDED_EXTRA_CHARS
        assert text.endswith("zebra okapi") and memory_text(small) == "green tea\nzebra"
        assert replica.index is not None
        await replica.index.wait_idle()
        assert await _index_view(replica) == await _store_view(replica)
        assert later.id in await _index_view(replica)
