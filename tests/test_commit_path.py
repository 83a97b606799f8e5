"""The commit path: a lone writer commits inline, concurrent writers group, WAL checkpoints run off
the write path and keep the log bounded. Real SQLite files throughout."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from crdtmem import Replica


async def test_a_lone_writer_commits_inline_and_concurrent_writers_share_commits(tmp_path: Path) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a") as replica:
        committer = replica._committer
        for i in range(20):
            await replica.add(f"fact {i}", user_id="u1")
        assert committer.inline_units == 20, f"{committer.inline_units} of 20 inline"

        before_units, before_groups = committer.units, committer.groups
        await asyncio.gather(*(replica.add(f"together {i}", user_id="u1") for i in range(64)))
        units, groups = committer.units - before_units, committer.groups - before_groups
        assert units == 64
        assert groups <= units // 2, f"64 concurrent writes took {groups} commits: no group commit"

        listed = await replica.list(user_id="u1", limit=200)
        assert len(listed) == 84


async def test_checkpoints_keep_the_log_bounded_under_continuous_writes(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    async with Replica(db, replica_id="a") as replica:
        checkpointer = replica._store._checkpointer  # type: ignore[attr-defined]
        sizes = []
        for i in range(700):
            await replica.add(f"a fact that is written while the log is checkpointed {i}", user_id="u1")
            if i % 100 == 99:
                sizes.append(os.path.getsize(f"{db}-wal"))
        assert checkpointer.checkpoints >= 2
        assert checkpointer.errors == 0
        # ~17 pages per write: without restarting the log it would grow ~7 MB per 100 writes to the end
        assert max(sizes) < 32 * 2**20, f"the WAL kept growing: {sizes}"
        assert sizes[-1] <= 1.3 * sizes[3], f"the WAL kept growing: {sizes}"
    async with Replica(db, replica_id="a") as reopened:
        assert len(await reopened.list(user_id="u1", limit=1000)) == 700
        assert reopened._store.integrity_check() == "ok"  # type: ignore[attr-defined]


async def test_a_write_cancelled_during_its_commit_does_not_let_the_next_one_build_on_old_state(tmp_path):
    """The commit thread finishes a unit whose writer was cancelled; the next write must build on it,
    or the two replicas' views of the memory would diverge for good."""
    async with Replica(tmp_path / "a.db", replica_id="a") as a:
        made = await a.add("v0", user_id="u1")
        asyncio.get_running_loop().call_soon(lambda: None)  # other work queued: the commit goes to the thread
        first = asyncio.create_task(a.update(made.id, content="v1", metadata={"k": "one"}))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        second = await a.update(made.id, content="v2")
        assert (second.content, second.metadata) == ("v2", {"k": "one"})
        async with Replica(None, replica_id="b") as b:
            await b.apply(await a.export_since(a.store.channels()))
            on_b = await b.get(made.id)
        assert (on_b.content, on_b.metadata) == ("v2", {"k": "one"})
        assert a._committer._outstanding == 0
