"""Writes tests/data/store-v1.db with crdtmem as of storage schema 1 (run with that checkout on sys.path)."""

import asyncio
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])
from crdtmem import Replica


async def main(out: Path) -> None:
    ticks = iter(range(1_700_000_000_000, 1_700_000_000_000 + 10**6, 7))
    async with (
        Replica(out, replica_id="old", synchronous="FULL", wall_clock=lambda: next(ticks)) as a,
        Replica(None, replica_id="peer", wall_clock=lambda: next(ticks)) as b,
    ):
        fact = await a.add("v0", user_id="u1", memory_id="fact-1", metadata={"n": 0}, tags=["t"])
        for i in range(1, 40):
            await a.update(fact.id, content=f"v{i}", metadata={"n": i})
        conv = await a.add(
            [{"role": "user", "text": "hello"}], kind="conversation", user_id="u1", memory_id="conv-1"
        )
        for i in range(30):
            await a.append_message(conv.id, role="user" if i % 2 else "assistant", text=f"turn {i}")
        lst = await a.add(["a", "b"], kind="list", user_id="u1", memory_id="list-1")
        await a.add_items(lst.id, "c")
        await a.remove_items(lst.id, "a")
        ctr = await a.add(3, kind="counter", tenant_id="acme", memory_id="counter-1")
        await a.increment(ctr.id, 4)
        gone = await a.add("to delete", user_id="u2", memory_id="gone-1")
        await a.delete(gone.id)
        # a conflict: the peer writes the fact concurrently
        await b.apply(await a.export_since(["user:u1:memories"]))
        await b.update(fact.id, content="peer value")
        await b.append_message(conv.id, role="user", text="from the peer")
        await a.update(fact.id, content="local value")
        await a.apply(await b.export_since(["user:u1:memories"]))
        print((await a.get(fact.id)).conflicts, len((await a.get(conv.id)).content))
    conn = sqlite3.connect(out)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.close()


asyncio.run(main(Path(sys.argv[2])))
