"""The hot working set: a bounded LRU, warmed most-recent-last, never stale after a commit."""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import json
import sys
from pathlib import Path

import pytest

from crdtmem import Limits, Memory, Replica, Scope, Source
from crdtmem.engine.cache import LRU, MemoryCache, record_size


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


def test_lru_bounded_by_bytes_evicts_the_least_recently_used() -> None:
    lru: LRU[str] = LRU(100, max_bytes=10, size=len)
    lru.put("a", "aaaa")
    lru.put("b", "bbbb")
    assert lru.bytes == 8
    assert lru.get("a") == "aaaa"  # a is now the most recently used
    lru.put("c", "ccc")  # 11 bytes: b goes
    assert "b" not in lru and "a" in lru and "c" in lru and lru.bytes == 7
    lru.put("a", "a")  # a smaller value replaces the size charged for the key
    assert lru.bytes == 4
    lru.put("d", "d" * 5, size=6)  # a size given by the caller is what is charged
    assert lru.bytes == 10 and len(lru) == 3
    lru.discard("d")
    assert lru.bytes == 4
    lru.clear()
    assert lru.bytes == 0 and len(lru) == 0


def test_lru_does_not_keep_an_entry_larger_than_its_budget() -> None:
    lru: LRU[str] = LRU(100, max_bytes=10, size=len)
    lru.put("small", "12345")
    lru.put("big", "x" * 11)
    assert "big" not in lru and lru.get("small") == "12345" and lru.bytes == 5
    lru.put("small", "y" * 11)  # grown past the budget: dropped, not kept stale
    assert "small" not in lru and lru.bytes == 0
    assert lru.evicted == 2


def test_lru_still_bounded_by_count_when_bounded_by_bytes() -> None:
    lru: LRU[str] = LRU(2, max_bytes=1_000, size=len)
    for key in "abc":
        lru.put(key, key)
    assert len(lru) == 2 and "a" not in lru and lru.bytes == 2


def test_record_size_counts_strings_and_entries() -> None:
    small, big = memory("m", "x"), memory("m", "x" * 100_000)
    assert record_size(big) - record_size(small) == 100_000 - 1
    nested = dataclasses.replace(small, metadata={"k": ["a" * 1000, {"deep": "b" * 1000}]})
    assert record_size(nested) > record_size(small) + 2_000


BUDGET = 3 * 1024 * 1024
VALUE = 400 * 1024


async def test_large_memories_keep_both_caches_within_their_byte_budgets(tmp_path: Path) -> None:
    limits = Limits(record_cache_bytes=BUDGET, doc_cache_bytes=BUDGET)
    async with Replica(tmp_path / "r.db", replica_id="r", limits=limits) as replica:
        made = []
        for n in range(30):  # 30 x 400 KiB: 12 MiB, four times either budget
            one = await replica.add(f"{n:04d}" + "v" * VALUE, user_id="u1", metadata={"n": n})
            made.append(one.id)
            assert replica.cache.bytes <= BUDGET and replica.doc_cache.bytes <= BUDGET
            assert replica.cache.bytes >= min(n + 1, 7) * VALUE  # charged by size, not ignored
        assert len(replica.cache) < 30 and len(replica.doc_cache) < 30
        for n, memory_id in enumerate(made):  # read back correctly, evicted or not
            got = await replica.get(memory_id)
            assert got.content == f"{n:04d}" + "v" * VALUE and got.metadata == {"n": n}
            assert replica.cache.bytes <= BUDGET
        updated = await replica.update(made[0], content="short now")  # an evicted one, written again
        assert updated.content == "short now" and (await replica.get(made[0])).content == "short now"
        assert replica.cache.bytes <= BUDGET and replica.doc_cache.bytes <= BUDGET
    async with Replica(tmp_path / "r.db", replica_id="r", limits=limits) as reopened:  # warmed
        assert 0 < len(reopened.cache) < 30 and reopened.cache.bytes <= BUDGET
        assert (await reopened.get(made[-1])).content == f"{29:04d}" + "v" * VALUE


async def test_large_remote_memories_keep_the_caches_within_their_byte_budgets(tmp_path: Path) -> None:
    limits = Limits(record_cache_bytes=BUDGET, doc_cache_bytes=BUDGET)
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b", limits=limits) as b,
    ):
        made = [(await a.add(f"{n:04d}" + "r" * VALUE, user_id="u1")).id for n in range(20)]
        vector: dict[str, int] = {}
        for _ in range(5):  # several payloads of 4, so several commits
            payload = await a.export_since("user:u1:memories", vector, limit=4)
            await b.apply(payload)
            vector = b.version_vector("user:u1:memories")
            assert b.cache.bytes <= BUDGET and b.doc_cache.bytes <= BUDGET
        assert [(await b.get(i)).content[:4] for i in made] == [f"{n:04d}" for n in range(20)]
        assert b.cache.bytes <= BUDGET and b.doc_cache.bytes <= BUDGET


def _resident_bytes() -> int:
    """This process's resident memory after a full collection, with free heap handed back."""
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def _deep_size(value: object) -> int:
    size, stack = 0, [value]
    while stack:
        one = stack.pop()
        size += sys.getsizeof(one)
        if isinstance(one, dict):
            stack.extend(one.keys())
            stack.extend(one.values())
        elif isinstance(one, (list, tuple)):
            stack.extend(one)
    return size


WIDE_BUDGET = 8 * 1024 * 1024


@pytest.mark.skipif(
    not Path("/proc/self/status").exists() or not hasattr(ctypes.CDLL(None), "malloc_trim"),
    reason="measures resident memory through /proc and glibc",
)
async def test_wide_memories_keep_resident_memory_within_the_cache_budgets(tmp_path: Path) -> None:
    """A document of many small entries holds far more in Yrs than its stored bytes (each entry is a
    block and a map of strings there): charged by its stored bytes, sixty memories of 1,000 keys and
    1,000 tags held ~100 MB against budgets of 16 MiB together."""
    limits = Limits(record_cache_bytes=WIDE_BUDGET, doc_cache_bytes=WIDE_BUDGET)
    async with Replica(tmp_path / "r.db", replica_id="r", limits=limits, synchronous="NORMAL") as replica:
        await replica.add("warm", user_id="u1")
        before = _resident_bytes()
        for n in range(60):
            body = json.dumps(
                {"metadata": {f"k{i}": i + n for i in range(1_000)}, "tags": [f"t{i}" for i in range(1_000)]}
            )
            wide = json.loads(body)  # fresh objects, as a request's body
            await replica.add(f"{n}", user_id="u1", metadata=wide["metadata"], tags=wide["tags"])
        grown = _resident_bytes() - before
        assert replica.cache.bytes <= WIDE_BUDGET and replica.doc_cache.bytes <= WIDE_BUDGET
        assert grown <= 2.5 * 2 * WIDE_BUDGET, f"resident memory grew {grown / 2**20:.0f} MiB"


def test_record_size_is_at_least_what_python_holds_for_its_values() -> None:
    """A record read from the store is charged what its parsed values take (objects, not only text)."""
    wide = json.loads(
        json.dumps({"m": {f"k{i}": i * 1000 for i in range(1_000)}, "t": [f"t{i}" for i in range(1_000)]})
    )
    record = dataclasses.replace(memory("m"), metadata=wide["m"], tags=tuple(wide["t"]))
    assert record_size(record) >= _deep_size(record.metadata) + _deep_size(record.tags)
