"""Reads per second: ``await replica.get(id)`` from the record cache vs from the store.

Setup (not timed): one file with M memories (facts with metadata and tags, several users), copied so
that each replica opens its own file:

- cached: ``Replica(path)`` with the default cache, warmed by one pass over every id, so every timed
  ``get`` is a hit in ``replica.cache``;
- store: ``Replica(path, cache_size=0)``, so every ``get`` reads the SQLite row (reader connection)
  and parses its materialized JSON record;
- raw sqlite3 (for information): ``SELECT record FROM docs WHERE id = ?`` and ``json.loads`` on the
  same file, the floor under the store path.

All three read the same random sequence of ids. Ratio: cached / store (no target; the cache should be
well above 1x).

Run: ``python benchmarks/bench_reads.py`` (``--quick`` for about 10 s).
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import _common

from crdtmem import Replica


async def populate(path: Path, count: int) -> list[str]:
    ids = []
    async with Replica(path, synchronous="OFF") as r:
        for i in range(count):
            memory = await r.add(
                f"the user prefers answer style {i % 13} in context {i}",
                user_id=f"u{i % 10}",
                metadata={"i": i, "agent": "bench", "confidence": 0.75},
                tags=["bench", f"group-{i % 5}"],
            )
            ids.append(memory.id)
    return ids


async def read_all(replica: Replica, order: list[str]) -> tuple[int, float]:
    get = replica.get
    start = time.perf_counter()
    for memory_id in order:
        await get(memory_id)
    return len(order), time.perf_counter() - start


def read_raw(conn: sqlite3.Connection, order: list[str]) -> tuple[int, float]:
    start = time.perf_counter()
    for memory_id in order:
        (text,) = conn.execute("SELECT record FROM docs WHERE id = ?", (memory_id,)).fetchone()
        json.loads(text)
    return len(order), time.perf_counter() - start


async def main() -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--memories", type=int, default=None, help="memories in the file (default 2000)")
    p.add_argument("--reads", type=int, default=None, help="gets per case per round (default 50000)")
    args = p.parse_args()
    count = args.memories or (500 if args.quick else 2_000)
    reads = args.reads or (10_000 if args.quick else 50_000)
    rounds = _common.rounds_for(args)
    rng = random.Random(11)

    _common.print_machine()
    with _common.workdir(args) as root:
        start = time.perf_counter()
        source = root / "source.db"
        ids = await populate(source, count)
        cached_path, store_path = root / "cached.db", root / "store.db"
        for target in (cached_path, store_path):
            shutil.copyfile(source, target)
        order = [rng.choice(ids) for _ in range(reads)]
        print(
            f"{count} memories, {reads} random gets per case per round, {rounds} interleaved rounds "
            f"(setup {time.perf_counter() - start:.1f} s, not timed)",
            flush=True,
        )

        cached = Replica(cached_path, cache_size=max(10_000, count), warm=0)
        uncached = Replica(store_path, cache_size=0, warm=0)
        raw = sqlite3.connect(str(store_path))
        await cached.start()
        await uncached.start()
        try:
            await read_all(cached, ids)  # warm: every id now in the cache
            await read_all(uncached, ids[:200])
            hits_before = cached.cache.hits

            async def cached_case() -> tuple[int, float]:
                return await read_all(cached, order)

            async def store_case() -> tuple[int, float]:
                return await read_all(uncached, order)

            async def raw_case() -> tuple[int, float]:
                return read_raw(raw, order)

            cases = {
                "get, cached (replica.cache hit)": cached_case,
                "get, store (cache_size=0)": store_case,
                "sqlite3 SELECT + json.loads (info)": raw_case,
            }
            series = await _common.interleave(cases, rounds, "gets/s")
            assert cached.cache.hits - hits_before == reads * rounds, "a cached read missed the cache"
            assert len(uncached.cache) == 0

            if args.profile:
                await _common.profile_async("store reads", lambda: read_all(uncached, order))
        finally:
            raw.close()
            await cached.stop()
            await uncached.stop()

    labels = list(cases)
    _common.print_table("Reads: Replica.get", series)
    ratios = [
        _common.ratio(series, labels[0], labels[1], "cached / store"),
        _common.ratio(series, labels[1], labels[2], "store get / raw sqlite3 (info)"),
    ]
    return _common.finish(args, "reads", series, ratios, {"memories": count, "reads": reads})


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
