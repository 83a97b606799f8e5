"""Long-lived memories at constant cost, in bytes: a 1,000-message conversation and a fact updated
1,000 times by default, 10,000 in the soak set (``-m soak``). Timings are benchmarks'
(``benchmarks/bench_hot_memory.py`` asserts the time ratios); these assert what does not depend on
the machine: delta sizes, the tail after a snapshot, and file bytes per message."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from crdtmem import Replica
from crdtmem.testing import assert_store_consistent

TEXT = "turn {}: the user asks about the weather and the agent answers briefly"


def _file_bytes(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return os.path.getsize(path)


async def _conversation(tmp_path: Path, messages: int) -> None:
    sizes: list[int] = []
    files: dict[int, float] = {}
    db = tmp_path / "chat.db"
    async with Replica(db, replica_id="a", synchronous="NORMAL") as replica:
        replica.on_commit(lambda deltas: sizes.extend(len(d.update) for d in deltas))
        chat = await replica.add([], kind="conversation", user_id="u1")
        for i in range(messages):
            await replica.append_message(chat.id, role="user", text=TEXT.format(i))
            if i + 1 in (messages // 5, messages):
                await replica.settle()
                text = sum(len(TEXT.format(k).encode()) for k in range(i + 1))
                files[i + 1] = _file_bytes(db) / text
        early, late = sum(sizes[1:11]) / 10, sum(sizes[-10:]) / 10
        assert late <= 1.2 * early, f"an append logged {early:.0f} B early, {late:.0f} B after {messages}"
        stored = replica.store.load_doc(chat.id)
        assert stored is not None and stored.snapshot is not None
        assert len(stored.tail) < replica.snapshots.every_deltas
        record = await replica.get(chat.id)
        assert [m["text"] for m in record.content] == [TEXT.format(i) for i in range(messages)]
        assert_store_consistent(replica)
    # the file grows with the conversation, not with its square: the same bytes per message of text
    # at a fifth of the length as at the end (with get_update(state before) deltas it doubled)
    first, last = files[messages // 5], files[messages]
    assert last <= 1.3 * first, (
        f"file/text {first:.1f}x at {messages // 5} messages, {last:.1f}x at {messages}"
    )
    async with Replica(db) as reopened:
        assert (await reopened.get(chat.id)) == record


async def _fact(tmp_path: Path, updates: int) -> None:
    sizes: list[int] = []
    async with Replica(tmp_path / "fact.db", replica_id="a", synchronous="NORMAL") as replica:
        replica.on_commit(lambda deltas: sizes.extend(len(d.update) for d in deltas))
        fact = await replica.add("v0", user_id="u1", metadata={"n": 0})
        for i in range(updates):
            await replica.update(fact.id, content=f"value {i}", metadata={"n": i})
        await replica.settle()
        early, late = sum(sizes[1:11]) / 10, sum(sizes[-10:]) / 10
        assert late <= 1.2 * early, f"an update logged {early:.0f} B early, {late:.0f} B after {updates}"
        state = replica.store.load_state(fact.id) or b""
        # Yrs keeps a small tombstone per overwritten entry (three registers per update): bounded
        # once peers acknowledge it (compaction), linear and small until then
        assert len(state) < 40 * updates + 2_000, f"{len(state)} B of state after {updates} updates"
        stored = replica.store.load_doc(fact.id)
        assert stored is not None and len(stored.tail) < replica.snapshots.every_deltas
        assert (await replica.get(fact.id)).content == f"value {updates - 1}"
        assert_store_consistent(replica)


async def test_a_conversation_of_1000_messages_costs_the_same_bytes_per_message(tmp_path: Path) -> None:
    await _conversation(tmp_path, 1_000)


async def test_a_fact_updated_1000_times_logs_the_same_bytes_per_update(tmp_path: Path) -> None:
    await _fact(tmp_path, 1_000)


@pytest.mark.soak
async def test_a_conversation_of_10000_messages(tmp_path: Path) -> None:
    await _conversation(tmp_path, 10_000)


@pytest.mark.soak
async def test_a_fact_updated_10000_times(tmp_path: Path) -> None:
    await _fact(tmp_path, 10_000)
