"""A batch of remote deltas is stored first and read back after its commit: reads stay current,
events come once per memory, and a crash in between loses nothing."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from crdtmem import Replica
from crdtmem.engine.remote import READ_BACK_AT_MOST
from crdtmem.testing import assert_converged, assert_store_consistent

CH = "user:u1:memories"
MEMORIES = 3 * READ_BACK_AT_MOST


async def _source(tmp_path: Path) -> tuple[Replica, list[str]]:
    source = await Replica(tmp_path / "source.db", replica_id="source").start()
    ids = []
    for i in range(MEMORIES):
        kind = ("fact", "conversation", "list")[i % 3]
        content = {"fact": f"fact {i}", "conversation": [{"role": "user", "text": f"hi {i}"}], "list": [i]}[
            kind
        ]
        ids.append((await source.add(content, kind=kind, user_id="u1", metadata={"i": i})).id)  # type: ignore[arg-type]
    return source, ids


async def test_a_batch_is_read_back_after_its_commit_and_reads_stay_current(tmp_path: Path) -> None:
    source, ids = await _source(tmp_path)
    async with source, Replica(tmp_path / "target.db", replica_id="target") as target:
        events = target.events()
        result = await target.apply(await source.export_since([CH]))
        assert result.applied == MEMORIES and result.events == ()  # the events come with the records
        assert sorted(target.store.stale()) == sorted(ids)  # durably marked, in the apply's commit
        assert await target.get(ids[0]) == (await source.get(ids[0])).with_version(
            (await target.get(ids[0])).version
        )
        assert ids[0] not in target.store.stale()
        listed = await target.list(user_id="u1")  # a read that needs every record materializes first
        assert len(listed) == MEMORIES and target.store.stale() == []
        for memory in listed:
            assert memory.to_dict() | {"version": 0} == (await source.get(memory.id)).to_dict() | {
                "version": 0
            }
        delivered = []
        while (event := await events.get(0)) is not None:
            delivered.append(event)
        assert sorted(e.memory.id for e in delivered) == sorted(ids)
        assert {e.event_type for e in delivered} == {"create"} and {e.origin for e in delivered} == {"source"}
        assert_store_consistent(target)
        assert_converged([source, target])


async def test_payloads_of_one_catch_up_are_read_back_once(tmp_path: Path) -> None:
    source, ids = await _source(tmp_path)
    async with source, Replica(tmp_path / "target.db", replica_id="target") as target:
        events = target.events()
        first, seen = await source.export_since([CH]), source.version_vectors([CH])
        for memory_id in ids:
            await source.update(memory_id, metadata={"second": True})
        second = await source.export_since([CH], seen)
        await target.apply(first)  # pages of a pull, back to back: nothing reads in between
        await target.apply(second)
        await target.settle()
        delivered = []
        while (event := await events.get(0)) is not None:
            delivered.append(event)
        # one event per memory for both payloads, announcing it as new here
        assert sorted(e.memory.id for e in delivered) == sorted(ids)
        assert all(e.memory.metadata["second"] is True for e in delivered)
        assert_converged([source, target])


async def test_a_local_write_to_a_stale_memory_reads_it_back_itself(tmp_path: Path) -> None:
    source, ids = await _source(tmp_path)
    async with source, Replica(tmp_path / "target.db", replica_id="target") as target:
        await target.apply(await source.export_since([CH]))
        fact = ids[0]
        assert fact in target.store.stale()
        written = await target.update(fact, metadata={"local": 1})
        assert fact not in target.store.stale()
        assert written.content == "fact 0" and written.metadata == {"i": 0, "local": 1}
        assert await target.get(fact) == written
        await target.settle()
        assert await target.get(fact) == written  # not read back again over the write


async def test_a_crash_between_the_batch_and_its_read_back_loses_nothing(tmp_path: Path) -> None:
    source, ids = await _source(tmp_path)
    async with source:
        payload = tmp_path / "payload.bin"
        payload.write_bytes(await source.export_since([CH]))
        expected = {m: (await source.get(m)).to_dict() | {"version": 0} for m in ids}
        child = textwrap.dedent(
            f"""
            import asyncio, os, signal
            from crdtmem import Replica

            async def main():
                replica = await Replica({str(tmp_path / "target.db")!r}, replica_id="target").start()
                result = await replica.apply(open({str(payload)!r}, "rb").read())
                print("applied", result.applied, flush=True)
                os.kill(os.getpid(), signal.SIGKILL)  # before the batch is read back

            asyncio.run(main())
            """
        )
        done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
        assert done.returncode == -signal.SIGKILL, done.stderr
        assert done.stdout.split() == ["applied", str(MEMORIES)]
        conn = sqlite3.connect(tmp_path / "target.db")
        try:
            (stale,) = conn.execute("SELECT count(*) FROM stale").fetchone()
        finally:
            conn.close()
        assert stale == MEMORIES  # the crash came before any record was written
        async with Replica(tmp_path / "target.db") as target:
            for memory_id, record in expected.items():
                assert (await target.get(memory_id)).to_dict() | {"version": 0} == record
            await target.settle()
            assert target.store.stale() == []
            assert_store_consistent(target)
            assert_converged([source, target])
