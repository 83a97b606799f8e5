"""Child process of ``tests/test_index.py``: commits writes, then blocks its indexer on them.

Usage: ``python index_crash.py DB_PATH ENGINE``

Opens ``Replica(DB_PATH, replica_id="a")`` with an index on ENGINE whose embedder is the default
hashing one (same model name, so a later start with the plain default resumes from the mark) except
that it never returns for a text containing "never indexed". Prints, each once the step is durable::

    kept <memory id>        a memory written and indexed
    late <memory id>        a memory committed; the indexer picks it up next
    deleted <memory id>     "kept", deleted (committed, not indexed either)
    embedding <n>           the indexer is embedding the late batch: between commit and upsert

and then waits to be killed.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Sequence

from crdtmem import Replica
from crdtmem.index import IndexSettings
from crdtmem.index.embedders import HashingEmbedder

MARKER = "never indexed"


class BlocksOnMarker(HashingEmbedder):
    def __init__(self, release: threading.Event, reached: asyncio.Event, loop: asyncio.AbstractEventLoop):
        super().__init__()
        self.release, self.reached, self.loop = release, reached, loop

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if any(MARKER in text for text in texts):
            self.loop.call_soon_threadsafe(self.reached.set)
            self.release.wait()  # never set: the process is killed here
        return super().embed(texts)


async def main(path: str, engine: str) -> None:
    release, reached = threading.Event(), asyncio.Event()
    embedder = BlocksOnMarker(release, reached, asyncio.get_running_loop())
    async with Replica(path, replica_id="a", index=IndexSettings(engine=engine, embedder=embedder)) as r:
        assert r.index is not None
        kept = await r.add("indexed before the crash", user_id="u1")
        await r.index.wait_idle()
        print("kept", kept.id, flush=True)
        late = await r.add("committed but never indexed", user_id="u1")
        print("late", late.id, flush=True)
        await r.delete(kept.id)
        print("deleted", kept.id, flush=True)
        await reached.wait()
        print("embedding", 1, flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
