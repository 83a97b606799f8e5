"""The hot working set: a bounded LRU, warmed most-recent-last, never stale after a commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from crdtmem import Memory, Replica, Scope, Source
from crdtmem.engine.cache import LRU, MemoryCache


def memory(memory_id: str, content: str = "x") -> Memory:
    return Memory(
        id=memory_id,
        kind="fact",
        content=content,
        metadata={},
        tags=(),
        source=Source(),
        scope=Scope(),
        channels=("system:global",),
        created_at="",
        updated_at="",
        deleted=False,
        conflicted=False,
    )


def test_lru_is_bounded_and_evicts_the_least_recently_used() -> None:
    lru: LRU[int] = LRU(3)
    for n, key in enumerate("abc"):
        lru.put(key, n)
    assert lru.get("a") == 0  # a is now the most recently used
    lru.put("d", 3)
    assert len(lru) == 3
    assert "b" not in lru
    assert all(k in lru for k in "acd")
    lru.put("c", 20)  # an update refreshes recency too
    lru.put("e", 4)
    assert "a" not in lru and lru.get("c") == 20


def test_lru_counts_hits_and_misses() -> None:
    lru: LRU[str] = LRU(2)
    lru.put("a", "A")
    assert lru.get("a") == "A"
    assert lru.get("missing") is None
    assert (lru.hits, lru.misses) == (1, 1)


def test_lru_discard_and_clear() -> None:
    lru: LRU[int] = LRU(5)
    lru.put("a", 1)
    lru.put("b", 2)
    lru.discard("a")
    lru.discard("never there")
    assert "a" not in lru and len(lru) == 1
    lru.clear()
    assert len(lru) == 0


def test_lru_capacity_zero_stores_nothing() -> None:
    lru: LRU[int] = LRU(0)
    lru.put("a", 1)
    assert len(lru) == 0 and lru.get("a") is None


def test_lru_refuses_negative_capacity() -> None:
    with pytest.raises(ValueError):
        LRU(-1)


def test_warm_keeps_the_most_recent() -> None:
    cache = MemoryCache(2)
    newest_first = [memory("new"), memory("mid"), memory("old")]
    assert cache.warm(newest_first) == 3
    assert "new" in cache and "mid" in cache and "old" not in cache
    cache.put("another", memory("another"))
    assert "new" in cache and "mid" not in cache  # mid was warmed as the least recent


async def test_replica_cache_follows_local_and_remote_commits(tmp_path: Path) -> None:
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b", cache_size=3) as b,
    ):
        made = await a.add("v1", user_id="u1")
        await b.apply(await a.export_since("user:u1:memories"))
        assert made.id in b.cache
        assert (await b.get(made.id)).content == "v1"
        await a.update(made.id, content="v2")
        await b.apply(await a.export_since("user:u1:memories", b.version_vector("user:u1:memories")))
        assert b.cache.get(made.id) is not None and b.cache.get(made.id).content == "v2"  # type: ignore[union-attr]
        assert (await b.get(made.id)).content == "v2"  # never stale
        updated = await b.update(made.id, content="v3")
        assert b.cache.get(made.id) == updated
        for n in range(5):
            await b.add(f"m{n}")
        assert len(b.cache) == 3  # bounded
        assert (await b.get(made.id)).content == "v3"  # evicted, read back from the store


async def test_replica_without_a_cache(tmp_path: Path) -> None:
    async with Replica(tmp_path / "r.db", replica_id="r", cache_size=0) as replica:
        made = await replica.add("x")
        await replica.update(made.id, content="y")
        assert len(replica.cache) == 0
        assert (await replica.get(made.id)).content == "y"
