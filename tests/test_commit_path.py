"""The commit path: a lone writer commits inline, concurrent writers group, WAL checkpoints run off
the write path and keep the log bounded. Real SQLite files throughout."""

from __future__ import annotations

import asyncio
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
