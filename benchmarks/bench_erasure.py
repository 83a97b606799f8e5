"""Forgetting memories: do their bytes leave the SQLite files, and what does that cost the write path?

Part 1, bytes. Each variant writes ``--memories`` memories, each holding a distinctive token and
rewritten a few times (so snapshots are taken and overwritten), forgets every one of them, and then
counts the tokens still found in the bytes of the database file and of its write-ahead log. The
variants take away the two measures the store combines:

- ``rows only``: the rows are deleted and the stubs written, no ``secure_delete``, no WAL truncation;
- ``secure_delete``: freed space is zeroed, the WAL is not truncated;
- ``WAL truncated``: ``wal_checkpoint(TRUNCATE)`` after each forget, without ``secure_delete``;
- ``both`` (what the store does).

Part 2, cost. Local fact updates per second with ``secure_delete=ON`` (the store's setting) against
the same store with it off, interleaved rounds; and the time of one ``forget`` against one
``delete`` of a memory of the same history.

Run: ``python benchmarks/bench_erasure.py`` (``--quick``: fewer memories and writes).
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from pathlib import Path

import _common

from crdtmem import Replica
from crdtmem.store.sqlite import SQLiteStore

CH = "user:u1:memories"


class Variant(SQLiteStore):
    """The store with either measure switched off."""

    def __init__(self, path: Path, *, secure: bool, truncate: bool):
        super().__init__(path, synchronous="NORMAL")
        self._secure, self._truncate = secure, truncate

    def _connect(self) -> sqlite3.Connection:
        conn = super()._connect()
        if not self._secure:
            conn.execute("PRAGMA secure_delete=OFF")
        return conn

    def scrub(self) -> None:
        if self._truncate:
            super().scrub()


def _left(path: Path, tokens: list[str]) -> tuple[int, int]:
    found = []
    for name in (path, Path(f"{path}-wal")):
        data = name.read_bytes() if name.exists() else b""
        found.append(sum(token.encode() in data for token in tokens))
    return found[0], found[1]


async def _bytes_left(
    path: Path, memories: int, rewrites: int, secure: bool, truncate: bool
) -> tuple[int, int]:
    store = Variant(path, secure=secure, truncate=truncate)
    tokens = [f"token-{n:05d}-purple-octopus" for n in range(memories)]
    async with Replica(store=store, replica_id="a", snapshot_every=3) as replica:
        ids = []
        for token in tokens:
            memory = await replica.add(f"{token} v0", user_id="u1")
            for n in range(1, rewrites):
                await replica.update(memory.id, content=f"{token} v{n}")
            ids.append(memory.id)
        await replica.settle()
        for memory_id in ids:
            await replica.forget(memory_id)
        return _left(path, tokens)


async def _updates(path: Path, secure: bool, writes: int) -> tuple[int, float]:
    store = Variant(path, secure=secure, truncate=True)
    async with Replica(store=store, replica_id="a") as replica:
        memory = await replica.add("v", user_id="u1")
        start = time.perf_counter()
        for n in range(writes):
            await replica.update(memory.id, content=f"value {n} " + "x" * 200)
        return writes, time.perf_counter() - start


async def _erase_vs_delete(path: Path, forget: bool, history: int, memories: int) -> tuple[int, float]:
    async with Replica(path, replica_id="a", synchronous="NORMAL") as replica:
        ids = []
        for m in range(memories):
            memory = await replica.add(f"memory {m}", user_id="u1")
            for n in range(history):
                await replica.update(memory.id, content=f"memory {m} v{n}")
            ids.append(memory.id)
        await replica.settle()
        start = time.perf_counter()
        for memory_id in ids:
            await (replica.forget(memory_id) if forget else replica.delete(memory_id))
        return memories, time.perf_counter() - start


async def main() -> int:
    parser = _common.parser(__doc__ or "")
    args = parser.parse_args()
    memories, rewrites, writes = (50, 4, 300) if args.quick else (200, 6, 1000)
    rounds = _common.rounds_for(args)
    _common.print_machine()
    with _common.workdir(args) as root:
        fresh = _common.FreshPaths(root)
        print(f"\nbytes left after forgetting {memories} memories ({rewrites} writes each): db / wal")
        left = {}
        for label, secure, truncate in (
            ("rows only", False, False),
            ("secure_delete", True, False),
            ("WAL truncated", False, True),
            ("both (the store)", True, True),
        ):
            left[label] = await _bytes_left(fresh("bytes"), memories, rewrites, secure, truncate)
            print(f"  {label:<18} {left[label][0]:>5} / {left[label][1]:<5} of {memories} tokens")
        series = await _common.interleave(
            {
                "updates, secure_delete=ON": lambda: _updates(fresh("on"), True, writes),
                "updates, secure_delete=OFF": lambda: _updates(fresh("off"), False, writes),
                "forget": lambda: _erase_vs_delete(fresh("forget"), True, 20, 20),
                "delete": lambda: _erase_vs_delete(fresh("delete"), False, 20, 20),
            },
            rounds,
            "ops/s",
        )
        _common.print_table("cost", series)
        ratios = [
            _common.ratio(
                series, "updates, secure_delete=ON", "updates, secure_delete=OFF", "secure_delete cost"
            ),
            _common.ratio(series, "forget", "delete", "forget vs delete"),
        ]
        extra = {"bytes_left": {k: {"db": v[0], "wal": v[1]} for k, v in left.items()}, "memories": memories}
        status = _common.finish(args, "erasure", series, ratios, extra)
        if left["both (the store)"] != (0, 0):
            print("NOT MET: forgotten tokens are still in the files")
            status = 1
        return status


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
