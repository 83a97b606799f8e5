"""Durable local writes per second: crdtmem ``Replica.add`` vs raw sqlite-utils inserts.

Both sides write to a fresh file in WAL mode with ``synchronous=FULL`` and acknowledge a write only
after its transaction committed:

- sequential: one ``await replica.add(...)`` after another, vs one sqlite-utils ``insert`` per write
  (sqlite-utils wraps each insert in its own transaction);
- concurrent: W writer tasks under ``asyncio.gather`` (crdtmem's group commit folds queued writes into
  one transaction), vs a grouped baseline that inserts W rows per transaction: the like-for-like
  comparison, since grouping writes is what crdtmem does too (and the best any group commit can do).
  The same rows inserted one transaction per write are shown for information.

The baseline row is comparable: id (uuid hex), content, JSON metadata. crdtmem writes more per add (the
Yrs document state, the materialized record, the delta log, the channel log and version vector), so
the ratio measures what the CRDT machinery and that bookkeeping cost on top of the durable insert.

Targets: crdtmem / sqlite-utils >= 0.5x, sequential (against 1 transaction per write) and concurrent
(against the grouped baseline).

Run: ``python benchmarks/bench_local_writes.py`` (``--quick`` for about 10 s).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
import uuid

import _common
import sqlite_utils

from crdtmem import Replica

TARGET = 0.5
USERS = 8


def metadata_for(i: int) -> dict[str, object]:
    return {"i": i, "agent": "bench", "confidence": 0.9}


def baseline_db(path: object) -> tuple[sqlite3.Connection, sqlite_utils.Database]:
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    db = sqlite_utils.Database(conn)
    db.table("memories").create({"id": str, "content": str, "metadata": str}, pk="id")
    return conn, db


def baseline_row(i: int) -> dict[str, str]:
    return {
        "id": uuid.uuid4().hex,
        "content": f"fact number {i}",
        "metadata": json.dumps(metadata_for(i)),
    }


def run_sqlite_utils_per_write(path: object, n: int) -> tuple[int, float]:
    conn, db = baseline_db(path)
    table = db.table("memories")
    try:
        start = time.perf_counter()
        for i in range(n):
            table.insert(baseline_row(i))  # its own BEGIN ... COMMIT: one fsync per write
        elapsed = time.perf_counter() - start
        assert conn.execute("SELECT count(*) FROM memories").fetchone()[0] == n
    finally:
        conn.close()
    return n, elapsed


def run_sqlite_utils_grouped(path: object, n: int, group: int) -> tuple[int, float]:
    conn, db = baseline_db(path)
    table = db.table("memories")
    try:
        start = time.perf_counter()
        for first in range(0, n, group):
            rows = [baseline_row(i) for i in range(first, min(n, first + group))]
            table.insert_all(rows, batch_size=group)  # one transaction per group
        elapsed = time.perf_counter() - start
        assert conn.execute("SELECT count(*) FROM memories").fetchone()[0] == n
    finally:
        conn.close()
    return n, elapsed


def run_sqlite3_per_write(path: object, n: int) -> tuple[int, float]:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE memories (id TEXT PRIMARY KEY, content TEXT, metadata TEXT)")
    try:
        start = time.perf_counter()
        for i in range(n):
            row = baseline_row(i)
            conn.execute("BEGIN")
            conn.execute("INSERT INTO memories VALUES (?, ?, ?)", tuple(row.values()))
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    return n, elapsed


async def crdtmem_sequential(replica: Replica, n: int) -> None:
    for i in range(n):
        await replica.add(f"fact number {i}", user_id=f"u{i % USERS}", metadata=metadata_for(i))


async def crdtmem_concurrent(replica: Replica, writers: int, each: int) -> None:
    async def writer(w: int) -> None:
        for j in range(each):
            i = w * each + j
            await replica.add(f"fact number {i}", user_id=f"u{i % USERS}", metadata=metadata_for(i))

    await asyncio.gather(*(writer(w) for w in range(writers)))


async def main() -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--writes", type=int, default=None, help="sequential writes per round (default 600)")
    p.add_argument("--writers", type=int, default=32, help="concurrent writer tasks (default 32)")
    p.add_argument("--each", type=int, default=None, help="writes per concurrent writer (default 60)")
    args = p.parse_args()
    n = args.writes or (300 if args.quick else 600)
    writers = args.writers
    each = args.each or (20 if args.quick else 60)
    rounds = _common.rounds_for(args)
    total = writers * each
    groups: list[float] = []

    _common.print_machine()
    print(
        f"sequential: {n} writes/round; concurrent: {writers} writers x {each} = {total} writes/round; "
        f"{rounds} interleaved rounds; synchronous=FULL, WAL"
    )

    with _common.workdir(args) as root:
        fresh = _common.FreshPaths(root)

        async def crdtmem_seq() -> tuple[int, float]:
            async with Replica(fresh("crdtmem-seq"), synchronous="FULL") as r:
                start = time.perf_counter()
                await crdtmem_sequential(r, n)
                return n, time.perf_counter() - start

        async def crdtmem_conc() -> tuple[int, float]:
            async with Replica(fresh("crdtmem-conc"), synchronous="FULL") as r:
                committer = r._committer  # group statistics only; no behaviour depends on it
                g0, u0 = committer.groups, committer.units
                start = time.perf_counter()
                await crdtmem_concurrent(r, writers, each)
                elapsed = time.perf_counter() - start
                groups.append((committer.units - u0) / max(1, committer.groups - g0))
                return total, elapsed

        async def su_seq() -> tuple[int, float]:
            return run_sqlite_utils_per_write(fresh("su-seq"), n)

        async def su_grouped() -> tuple[int, float]:
            return run_sqlite_utils_grouped(fresh("su-grouped"), total, writers)

        async def raw_seq() -> tuple[int, float]:
            return run_sqlite3_per_write(fresh("sqlite3-seq"), n)

        # warm-up: imports, page cache, first fsyncs; not measured
        await crdtmem_seq()
        await su_seq()

        cases = {
            "crdtmem add, sequential": crdtmem_seq,
            "sqlite-utils insert, 1 txn/write": su_seq,
            f"crdtmem add, {writers} concurrent writers": crdtmem_conc,
            f"sqlite-utils insert_all, {writers} rows/txn": su_grouped,
            "sqlite3 execute, 1 txn/write (info)": raw_seq,
        }
        series = await _common.interleave(cases, rounds, "writes/s")

        if args.profile:

            async def profiled() -> None:
                async with Replica(fresh("crdtmem-prof"), synchronous="FULL") as r:
                    await crdtmem_sequential(r, n)
                async with Replica(fresh("crdtmem-prof"), synchronous="FULL") as r:
                    await crdtmem_concurrent(r, writers, each)

            await _common.profile_async("crdtmem sequential + concurrent writes", profiled)

    labels = list(cases)
    avg_group = sorted(groups)[len(groups) // 2] if groups else 0.0
    _common.print_table(
        "Durable local writes (WAL, synchronous=FULL)",
        series,
        notes=[f"crdtmem group commit: median {avg_group:.1f} writes per transaction in the concurrent case"],
    )
    ratios = [
        _common.ratio(series, labels[0], labels[1], "sequential, crdtmem / sqlite-utils", TARGET),
        _common.ratio(series, labels[2], labels[3], "concurrent, crdtmem / sqlite-utils grouped", TARGET),
        _common.ratio(series, labels[2], labels[1], "concurrent, crdtmem / sqlite-utils 1 txn/write (info)"),
    ]
    return _common.finish(args, "local_writes", series, ratios, {"avg_group": avg_group})


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
