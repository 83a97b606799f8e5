"""Writes tests/data/store-v2.db with crdtmem as of storage schema 2 (snapshots in ``docs.state``).

Run with that checkout on sys.path: ``python tests/data/make_store_v2.py <checkout> tests/data/store-v2.db``.
"""

import asyncio
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
from crdtmem import Replica


async def main(out: Path) -> None:
    ticks = iter(range(1_700_000_000_000, 1_700_000_000_000 + 10**6, 7))
    async with Replica(
        out, replica_id="old", synchronous="FULL", wall_clock=lambda: next(ticks), snapshot_every=10
    ) as a:
        fact = await a.add("v0", user_id="u1", memory_id="fact-1", metadata={"n": 0})
        for i in range(1, 25):
            await a.update(fact.id, content=f"v{i}", metadata={"n": i})
        conv = await a.add([], kind="conversation", user_id="u1", memory_id="conv-1")
        for i in range(25):
            await a.append_message(conv.id, role="user" if i % 2 else "assistant", text=f"turn {i}")
        await a.add("no snapshot yet", user_id="u1", memory_id="fact-2")
        await a.snapshots.settle()
        assert a.store.get_meta("schema_version") == "2"
    conn = sqlite3.connect(out)
    snapped = conn.execute("SELECT count(*) FROM docs WHERE state IS NOT NULL").fetchone()[0]
    assert snapped == 2, snapped
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.close()


asyncio.run(main(Path(sys.argv[2])))
