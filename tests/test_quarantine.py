"""A damaged memory stays quarantined across restarts until an operator releases it.

Real SQLite files damaged under a stopped replica (as in ``test_storage_faults.py``), and real
``crdtmem serve`` processes restarted, killed, and checked with ``crdtmem check``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from crdtmem import Replica
from crdtmem.errors import MemoryQuarantined
from crdtmem.store.sqlite import SQLiteStore
from tests.support.processes import ServerProcess
from tests.support.rest import Api

GARBAGE = os.urandom(48)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        yield s


def _damage_state(db: Path, memory_id: str) -> tuple[Any, Any, Any]:
    """Garbage in the memory's snapshot; returns what was there (to repair it with)."""
    with sqlite3.connect(db) as conn:
        kept = conn.execute(
            "SELECT s.state, d.snap_id, s.codec FROM docs d LEFT JOIN doc_states s ON s.doc_id = d.id "
            "WHERE d.id = ?",
            (memory_id,),
        ).fetchone()
        conn.execute("INSERT OR REPLACE INTO doc_states(doc_id, state) VALUES (?, ?)", (memory_id, GARBAGE))
        conn.execute(
            "UPDATE docs SET snap_id = (SELECT max(id) FROM deltas WHERE doc_id = ?) WHERE id = ?",
            (memory_id, memory_id),
        )
    conn.close()
    return kept[0], kept[1], kept[2]


def _repair_state(db: Path, memory_id: str, kept: tuple[Any, Any, Any]) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT OR REPLACE INTO doc_states(doc_id, state, codec) VALUES (?, ?, ?)",
            (memory_id, kept[0], kept[2]),
        )
        conn.execute("UPDATE docs SET snap_id = ? WHERE id = ?", (kept[1], memory_id))
    conn.close()


def _crdtmem(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crdtmem", *args], capture_output=True, text=True, timeout=120
    )


async def test_a_quarantine_is_kept_in_the_file_and_set_aside_on_open(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    async with Replica(db, replica_id="r", wall_clock=lambda: 1_700_000_000_000) as replica:
        victim = (await replica.add("gets damaged", user_id="u1")).id
        other = (await replica.add("stays fine", user_id="u1")).id
    kept = _damage_state(db, victim)
    async with Replica(db, replica_id="r", warm=0) as replica:
        assert victim not in replica.quarantine  # not read yet
        with pytest.raises(MemoryQuarantined):
            await replica.update(victim, content="x")  # found where it is read
    async with Replica(db, replica_id="r", warm=0, wall_clock=lambda: 1_800_000_000_000) as replica:
        assert victim in replica.quarantine  # from the file, before anything reads it
        with pytest.raises(MemoryQuarantined):
            await replica.get(victim)
        (listed,) = replica.storage_status()["quarantined"]
        assert listed["memory_id"] == victim and "does not decode" in listed["reason"]
        assert listed["since"] < "2030"  # when it was found, not when it was loaded again
        assert (await replica.get(other)).content == "stays fine"
    _repair_state(db, victim, kept)
    store = SQLiteStore(db)
    store.open()
    try:
        assert [q.memory_id for q in store.quarantined()] == [victim]  # a repair alone releases nothing
        assert store.release(victim)
    finally:
        store.close()
    async with Replica(db, replica_id="r") as replica:
        assert victim not in replica.quarantine
        assert (await replica.get(victim)).content == "gets damaged"


async def test_a_served_node_keeps_a_quarantine_across_kill_and_restart_until_released(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    node = ServerProcess(tmp_path, "hub").start()
    try:
        api = Api(session, node.url)
        victim = (await api.add("the memory that gets damaged", user_id="u1"))["id"]
        other = (await api.add("a memory that stays fine", user_id="u1"))["id"]
        node.stop()
        kept = _damage_state(node.db, victim)
        node.start()
        async with session.patch(f"{node.url}/v1/memories/{victim}", json={"content": "y"}) as r:
            assert r.status == 503 and (await r.json())["error"] == "MemoryQuarantined"
        node.kill()  # kept when it was found, not at a clean stop
        node.start()
        status = await api.status()
        (listed,) = status["storage"]["quarantined"]  # before anything touched the memory
        assert listed["memory_id"] == victim and listed["reason"] and listed["since"]
        async with session.get(f"{node.url}/metrics") as r:
            assert "crdtmem_memories_quarantined 1.0" in await r.text()
        async with session.get(f"{node.url}/v1/memories/{victim}") as r:
            assert r.status == 503 and (await r.json())["error"] == "MemoryQuarantined"
        assert victim not in [m["id"] for m in await api.memories()]
        assert (await api.patch(other, content="still served"))["content"] == "still served"
        running = _crdtmem("check", "--db", str(node.db), "--release", victim)
        assert running.returncode == 3 and "is in use" in running.stderr, running.stderr
    finally:
        node.stop()
    assert "quarantined since before this start" in node.log.read_text()
    assert "Traceback" not in node.log.read_text()

    report = _crdtmem("check", "--db", str(node.db), "--json")
    assert report.returncode == 1, report.stderr
    found = json.loads(report.stdout)
    assert [q["memory_id"] for q in found["quarantined"]] == [victim]
    assert [d["memory_id"] for d in found["damaged"]] == [victim]
    text = _crdtmem("check", "--db", str(node.db))
    assert f"quarantined {victim} since" in text.stdout and "still damaged" in text.stdout

    refused = _crdtmem("check", "--db", str(node.db), "--release", victim)
    assert refused.returncode == 1 and "still does not read back" in refused.stdout, refused.stdout
    _repair_state(node.db, victim, kept)  # e.g. the page restored from a backup
    pending = _crdtmem("check", "--db", str(node.db), "--json")
    assert pending.returncode == 1  # it reads back, but the node would still answer 503
    assert (
        json.loads(pending.stdout)["damaged"] == []
        and "reads back now" in _crdtmem("check", "--db", str(node.db)).stdout
    )
    released = _crdtmem("check", "--db", str(node.db), "--release", victim, "--json")
    assert released.returncode == 0, released.stdout + released.stderr
    assert json.loads(released.stdout)["released"] == [victim]
    assert _crdtmem("check", "--db", str(node.db)).returncode == 0
    unknown = _crdtmem("check", "--db", str(node.db), "--release", victim)
    assert unknown.returncode == 1 and "not quarantined" in unknown.stdout

    node.start()
    try:
        assert (await api.status())["storage"]["quarantined"] == []
        assert (await api.get(victim))["content"] == "the memory that gets damaged"  # type: ignore[index]
        assert (await api.patch(victim, content="written again"))["content"] == "written again"
    finally:
        node.stop()
