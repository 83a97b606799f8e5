"""One search collection shared by several nodes: points carry revisions that every node computes
alike, a node that has not merged a change never overwrites the point of a node that has, whatever
order their upserts arrive in, and the conditional upsert holds even when another writer lands
between an upsert's version read and its write.

Two indexers write one engine: two ``QdrantClientEngine`` objects on one qdrant-client (local mode
in memory: the client class and calls a Qdrant server gets, conditional upsert included), and two
indexers on one Qdrant Edge shard."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient

from crdtmem import Replica
from crdtmem.document.memory import MemoryDoc
from crdtmem.document.revision import revision_of
from crdtmem.index import IndexSettings, Point, SearchFilter, open_indexer
from crdtmem.index.embedders import HashingEmbedder
from crdtmem.index.engines import QdrantClientEngine, QdrantEdgeEngine
from crdtmem.index.indexer import ERASED_VERSION, Indexer
from tests.conformance.engine_suite import DIM, payload, unit

U1 = "user:u1:memories"


class InterleavingClient(QdrantClient):
    """qdrant-client in local mode that runs ``between`` once, right after its next ``retrieve``:
    the moment at which another node's write can land between an upsert's version read and its
    conditional write."""

    between: Callable[[], None] | None = None

    def retrieve(self, *args: Any, **kwargs: Any) -> Any:
        records = super().retrieve(*args, **kwargs)
        hook, self.between = self.between, None
        if hook is not None:
            hook()
        return records


def test_a_write_landing_between_read_and_write_still_wins() -> None:
    client = InterleavingClient(location=":memory:", force_disable_check_same_thread=True)
    slow = QdrantClientEngine(client, "shared", owns_client=False)
    fast = QdrantClientEngine(client, "shared", owns_client=False)
    slow.ensure_collection(DIM)
    fast.ensure_collection(DIM)
    slow.upsert([Point("m", unit(0), payload("m", 1, content="v1"))])

    def newer_lands() -> None:
        assert fast.upsert([Point("m", unit(2), payload("m", 3, content="v3"))]) == 1

    client.between = newer_lands
    # the slow writer read version 1, so it sends version 2: Qdrant's condition refuses it
    slow.upsert([Point("m", unit(1), payload("m", 2, content="v2")), Point("n", unit(1), payload("n", 2))])
    assert client.between is None, "the other write ran between the read and the write"
    assert fast.versions() == {"m": 3, "n": 2}
    assert fast.payloads(["m"])["m"]["content"] == "v3"
    # equal versions still replace (a re-embedding); an older one is refused by the read
    assert slow.upsert([Point("m", unit(3), payload("m", 3, content="again"))]) == 1
    assert slow.upsert([Point("m", unit(3), payload("m", 2, content="old"))]) == 0
    assert slow.payloads(["m"])["m"]["content"] == "again"
    slow.close()
    fast.close()
    client.close()


# -- two indexers, two replicas, one collection ----------------------------------------------------


@contextlib.contextmanager
def _shared_engines(kind: str, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    if kind == "qdrant-client":
        client = QdrantClient(location=":memory:", force_disable_check_same_thread=True)
        yield (
            QdrantClientEngine(client, "fleet", owns_client=False),
            QdrantClientEngine(client, "fleet", owns_client=False),
        )
        client.close()
    else:  # one Edge shard is one process's: both indexers write through the same engine object
        engine = QdrantEdgeEngine(tmp_path / "edge")
        yield engine, engine


@contextlib.asynccontextmanager
async def _node(name: str) -> AsyncIterator[Replica]:
    async with Replica(None, replica_id=name) as replica:
        yield replica


def _indexer(replica: Replica, engine: Any) -> Indexer:
    return Indexer(replica.store, replica.on_commit, engine, HashingEmbedder(), shared=True)


async def _sync(source: Replica, target: Replica) -> None:
    await target.apply(await source.export_since(U1, target.version_vector(U1)))


def _revision(replica: Replica, memory_id: str) -> int:
    state = replica.store.load_state(memory_id)
    assert state is not None
    return revision_of(MemoryDoc.from_state(memory_id, state, 5).doc)


@pytest.mark.parametrize("kind", ["qdrant-client", "edge"])
async def test_two_indexers_never_let_an_older_state_win(kind: str, tmp_path: Path) -> None:
    with _shared_engines(kind, tmp_path) as (engine_a, engine_b):
        async with _node("a") as a, _node("b") as b:
            m = await a.add("the user drinks tea", user_id="u1")
            await _sync(a, b)
            assert _revision(a, m.id) == _revision(b, m.id), "same state, same revision on both nodes"
            await a.update(m.id, content="the user drinks coffee")  # a is ahead of b
            ahead = _revision(a, m.id)
            assert ahead > _revision(b, m.id)

            index_b = _indexer(b, engine_b)
            index_a = _indexer(a, engine_a)
            # the node that is behind indexes first, then the one ahead: the newer point replaces it
            await index_b.start()
            await index_b.wait_idle()
            assert engine_b.payloads([m.id])[m.id]["content"] == "the user drinks tea"
            await index_a.start()
            await index_a.wait_idle()
            point = engine_a.payloads([m.id])[m.id]
            assert (point["version"], point["content"]) == (ahead, "the user drinks coffee")
            assert index_a.points_refused == 0

            # the node behind writes again from its older state (a local change of another memory
            # and a full rebuild): its point for m is refused, the newer one stays
            await b.add("the user lives in Oslo", user_id="u1")
            await index_b.wait_idle()
            report = await index_b.rebuild()
            assert index_b.points_refused >= 1
            point = engine_b.payloads([m.id])[m.id]
            assert (point["version"], point["content"]) == (ahead, "the user drinks coffee")
            assert report.ok and report.ahead == (m.id,) and not report.stale

            # concurrent changes on both nodes: every node agrees which one the index shows ...
            await b.update(m.id, add_tags=["drinks"])
            await asyncio.gather(index_a.wait_idle(), index_b.wait_idle())
            shown = max(_revision(a, m.id), _revision(b, m.id))
            assert engine_a.versions([m.id]) == {m.id: shown}
            # ... and their merge wins over both, on every node, and both verify clean
            await _sync(a, b)
            await _sync(b, a)
            merged = _revision(a, m.id)
            assert merged == _revision(b, m.id) > shown
            await asyncio.gather(index_a.wait_idle(), index_b.wait_idle())
            point = engine_a.payloads([m.id])[m.id]
            assert point["version"] == merged
            assert point["tags"] == ["drinks"] and "coffee" in point["content"]
            for index in (index_a, index_b):
                report = await index.verify()
                assert report.ok and not report.ahead, report

            # a delete leaves a tombstone, which a node that has not seen the delete cannot undo
            await a.delete(m.id)
            await index_a.wait_idle()
            deleted_at = _revision(a, m.id)
            await index_b.rebuild()  # b re-writes m from its state before the delete: refused
            tombstone = engine_a.payloads([m.id])[m.id]
            assert (tombstone["version"], tombstone["deleted"]) == (deleted_at, True)
            query = HashingEmbedder().embed(["the user drinks coffee"])[0]
            assert m.id not in {h.id for h in engine_a.search(query, SearchFilter(user_id="u1"), 5)}
            assert m.id in {h.id for h in engine_a.search(query, SearchFilter(include_deleted=True), 5)}
            # b updates m concurrently with the delete (b has not seen it)
            await b.update(m.id, content="old news")
            await index_b.wait_idle()
            assert engine_a.versions([m.id]) == {m.id: max(deleted_at, _revision(b, m.id))}
            # once both have merged the delete and the update (a delete conflict), they agree again
            await _sync(a, b)
            await _sync(b, a)
            await asyncio.gather(index_a.wait_idle(), index_b.wait_idle())
            final = engine_a.payloads([m.id])[m.id]
            assert final["version"] == _revision(a, m.id) == _revision(b, m.id)
            assert final["conflicted"] is True
            for index in (index_a, index_b):
                assert (await index.verify()).ok
            # the other node's memories are not orphans of this one
            assert (await index_a.verify()).orphans == ()
            await index_a.stop()
            await index_b.stop()


class CountingEmbedder(HashingEmbedder):
    """The hashing embedder, counting the texts it embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.embedded = 0

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.embedded += len(texts)
        return super().embed(texts)


@pytest.mark.parametrize("kind", ["qdrant-client", "edge"])
async def test_a_state_another_node_indexed_is_not_embedded_again(kind: str, tmp_path: Path) -> None:
    with _shared_engines(kind, tmp_path) as (engine_a, engine_b):
        async with _node("a") as a, _node("b") as b:
            for n in range(20):
                await a.add(f"fact number {n}", user_id="u1")
            await _sync(a, b)
            first, second = CountingEmbedder(), CountingEmbedder()
            async with Indexer(a.store, a.on_commit, engine_a, first, shared=True) as index_a:
                await index_a.wait_idle()
                assert (first.embedded, index_a.points_written) == (20, 20)
                async with Indexer(b.store, b.on_commit, engine_b, second, shared=True) as index_b:
                    await index_b.wait_idle()
                    assert (second.embedded, index_b.points_skipped, index_b.points_written) == (0, 20, 0)
                    assert (await index_b.verify()).ok
                    # a change only b has: b embeds that one memory, and a, behind, is refused
                    changed = (await b.list(limit=1))[0]
                    await b.update(changed.id, content="fact number 99")
                    await index_b.wait_idle()
                    assert second.embedded == 1
                    await index_a.rebuild()
                    assert index_a.points_refused == 1 and first.embedded == 20, "nothing re-embedded"
                    assert index_a.points_skipped == 19


@pytest.mark.parametrize("kind", ["qdrant-client", "edge"])
async def test_a_forgotten_memory_stays_erased_whatever_others_write(kind: str, tmp_path: Path) -> None:
    with _shared_engines(kind, tmp_path) as (engine_a, engine_b):
        async with _node("a") as a, _node("b") as b:
            secret = await a.add("the user's door code is 4711", user_id="u1")
            await a.add("the user likes jazz", user_id="u1")
            await _sync(a, b)
            async with (
                _indexer(a, engine_a) as index_a,
                _indexer(b, engine_b) as index_b,
            ):
                await asyncio.gather(index_a.wait_idle(), index_b.wait_idle())
                await a.forget(secret.id)
                await index_a.wait_idle()
                point = engine_a.payloads([secret.id])[secret.id]
                assert (point["version"], point["content"], point["erased"]) == (ERASED_VERSION, "", True)
                # b has not heard of the erasure: its update, and a rebuild from its state, are refused
                await b.update(secret.id, content="the user's door code is 4712")
                await index_b.wait_idle()
                await index_b.rebuild()
                assert engine_b.payloads([secret.id])[secret.id]["content"] == ""
                query = HashingEmbedder().embed(["door code"])[0]
                for flt in (SearchFilter(user_id="u1"), SearchFilter(include_deleted=True)):
                    assert all("door" not in h.payload["content"] for h in engine_a.search(query, flt, 10))
                # once b forgets it too, nothing changes, and both verify clean
                await _sync(a, b)
                assert b.forgotten(secret.id)
                await index_b.wait_idle()
                assert engine_b.payloads([secret.id])[secret.id]["version"] == ERASED_VERSION
                for index in (index_a, index_b):
                    assert (await index.verify()).ok


def test_settings_for_a_server_collection_come_from_the_environment() -> None:
    env = {
        "CRDTMEM_QDRANT_URL": "https://qdrant.internal:6333",
        "CRDTMEM_QDRANT_API_KEY": "secret",
        "CRDTMEM_QDRANT_COLLECTION": "fleet-memories",
    }
    settings = IndexSettings.from_env(env)
    assert (settings.engine, settings.api_key, settings.collection) == (
        "https://qdrant.internal:6333",
        "secret",
        "fleet-memories",
    )
    assert settings.is_shared
    given = IndexSettings.from_env(env, engine="edge", collection="mine")
    assert (given.engine, given.api_key, given.collection, given.is_shared) == (
        "edge",
        "secret",
        "mine",
        False,
    )
    assert not IndexSettings.from_env({}).is_shared
    assert IndexSettings(engine="qdrant-local", shared=True).is_shared


async def test_a_server_url_opens_a_shared_indexer_on_the_named_collection() -> None:
    async with Replica(None, replica_id="a") as replica:
        settings = IndexSettings.from_env({"CRDTMEM_QDRANT_COLLECTION": "fleet"}, engine="http://127.0.0.1:9")
        indexer = open_indexer(None, replica.store, replica.on_commit, settings)
        assert indexer.shared
        assert isinstance(indexer.engine, QdrantClientEngine)
        assert (indexer.engine.name, indexer.engine.collection) == ("qdrant-server", "fleet")
        indexer.engine.close()


def test_serve_takes_the_server_collection_from_flags_and_environment(tmp_path: Path) -> None:
    """``crdtmem serve --index`` with ``$CRDTMEM_QDRANT_URL`` indexes into that server's collection:
    with no server listening there, it says which collection it could not create, and fails."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    key = tmp_path / "qdrant.key"
    key.write_text("k3y\n")
    env = {
        **os.environ,
        "CRDTMEM_QDRANT_URL": f"http://127.0.0.1:{port}",
        "CRDTMEM_QDRANT_COLLECTION": "fleet",
    }
    command = [
        sys.executable,
        "-m",
        "crdtmem",
        "serve",
        "--db",
        str(tmp_path / "n.db"),
        "--index",
        "--port",
        "0",
    ]
    done = subprocess.run(
        [*command, "--qdrant-api-key-file", str(key)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 5, done.stderr  # the index does not open (not the database: 4)
    assert "qdrant-server" in done.stderr and "'fleet'" in done.stderr
    flagged = subprocess.run(
        [*command, "--index-collection", "other", "--qdrant-api-key-file", str(tmp_path / "missing")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert flagged.returncode == 2
    assert "cannot read --qdrant-api-key-file" in flagged.stderr
