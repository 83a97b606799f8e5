"""The search index against the store: scope filters, exact agreement after randomized multi-replica
runs with conflicts and deletes, restarts, crash repair, model changes, and REST search."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from pathlib import Path

import aiohttp
import pytest

from crdtmem import CrdtmemError, InvalidInput, Replica
from crdtmem.access import TokenTable
from crdtmem.index import IndexSettings
from crdtmem.index.embedders import HashingEmbedder
from crdtmem.server import Node

U1, U2 = "user:u1:memories", "user:u2:memories"


def settings(engine: str = "memory", **kw) -> IndexSettings:
    return IndexSettings(engine=engine, **kw)


async def _store_view(replica: Replica) -> dict[str, tuple[int, bool, bool]]:
    """{id: (version, deleted, conflicted)} of what the index must hold."""
    return {
        m.id: (m.version, m.deleted, m.conflicted)
        for m in await replica.list(include_deleted=True)
        if not m.deleted or m.conflicted
    }


async def _index_view(replica: Replica) -> dict[str, tuple[int, bool, bool]]:
    assert replica.index is not None
    engine = replica.index.engine
    versions = await asyncio.to_thread(engine.versions)
    view = {}
    for memory_id, version in versions.items():
        memory = await replica.get(memory_id)
        view[memory_id] = (version, memory.deleted, memory.conflicted)
    return view


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
            await r.search("x", filters={"colour": "red"})


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


async def test_crash_between_store_commit_and_index_upsert_is_repaired(tmp_path: Path) -> None:
    engine = settings("qdrant-local")
    async with Replica(tmp_path / "a.db", replica_id="a", index=engine) as r:
        kept = await r.add("indexed before the crash", user_id="u1")
        assert r.index is not None
        await r.index.wait_idle()
    # the "crash": commits reach the store, the indexer never runs for them
    async with Replica(tmp_path / "a.db", replica_id="a") as r:
        late = await r.add("committed but never indexed", user_id="u1")
        await r.delete(kept.id)
    async with Replica(tmp_path / "a.db", replica_id="a", index=engine) as r:
        assert r.index is not None
        await r.index.wait_idle()
        report = await r.index.verify()
        assert report.ok, report
        found = {x.memory.id for x in await r.search("never indexed", user_id="u1")}
        assert late.id in found and kept.id not in found


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
            status_body = await r.json()
        assert status_body["index"]["lag_versions"] == 0
        assert json.dumps(status_body["index"])
