"""Damaged storage under real ``crdtmem serve`` processes: surfaced, never silent, never a crash.

Each test damages a real SQLite file the way disks and people do (a second process on the file,
garbage in a record's JSON, in a memory's Yrs state or deltas, a garbage page) and checks what the
node does: the second process is refused before it touches anything, with its own exit code; a
damaged memory is quarantined (503, listed in status and metrics) while every other memory is
served; what cannot be read answers 5xx with a JSON body, never a plain-text error.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest

from crdtmem import Replica
from crdtmem.errors import StoreLocked
from crdtmem.store.lock import DatabaseLock
from crdtmem.store.sqlite import SQLiteStore
from tests.support.processes import ServerProcess
from tests.support.rest import Api, eventually

U1 = "user:u1:memories"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    # no keep-alive: nodes restart on the same port, and a pooled connection would be stale
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        yield s


async def _call(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> tuple[int, Any]:
    """Status and JSON body; fails the test if the body is not JSON."""
    async with session.request(method, url, **kw) as response:
        text = await response.text()
        assert response.content_type == "application/json", f"{method} {url}: {response.status} {text!r}"
        return response.status, json.loads(text)


def _sql(db: Path, statement: str, *args: Any) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(statement, args)
    conn.close()


async def _two_memories(api: Api) -> tuple[str, str]:
    victim = await api.add("the memory that gets damaged", user_id="u1")
    other = await api.add("a memory that stays fine", user_id="u1")
    await api.patch(victim["id"], content="the memory that gets damaged, changed")
    return victim["id"], other["id"]


async def _quarantined(api: Api) -> list[str]:
    return [q["memory_id"] for q in (await api.status())["storage"]["quarantined"]]


async def _metric(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(f"{url}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


async def _serves_the_others(api: Api, session: aiohttp.ClientSession, victim: str, other: str) -> None:
    """The quarantined memory answers 503 with a JSON error; every other memory is served."""
    url = f"{api.url}/v1/memories/{victim}"
    for method, body in (("GET", None), ("PATCH", {"content": "x"}), ("DELETE", None)):
        status, error = await _call(session, method, url, json=body)
        assert status == 503 and error["error"] == "MemoryQuarantined", (method, status, error)
        assert victim in error["message"]
    status, error = await _call(session, "GET", f"{url}/history")
    assert status == 503 and error["error"] == "MemoryQuarantined", error
    assert (await api.patch(other, content="still served"))["content"] == "still served"
    listed = [m["id"] for m in await api.memories()]
    assert other in listed and victim not in listed
    created = await api.add("written after the damage", user_id="u1")
    assert (await api.get(created["id"]))["content"] == "written after the damage"  # type: ignore[index]
    assert await _quarantined(api) == [victim]
    assert await _metric(session, api.url, "crdtmem_memories_quarantined") == 1


# -- one file, one process ---------------------------------------------------------------------------


async def test_a_second_process_on_the_same_file_is_refused_before_it_touches_anything(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    first = ServerProcess(tmp_path, "hub").start()
    try:
        api = Api(session, first.url)
        memory = await api.add("written by the first process", user_id="u1")
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "crdtmem",
                "serve",
                "--db",
                str(first.db),
                "--replica-id",
                "hub",
                "--port",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 3, second.stderr
        assert first.proc is not None
        assert f"{first.db} is in use by process {first.proc.pid}" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        assert first.db.with_name("hub.db.lock").read_text() == f"{first.proc.pid}\n"
        with pytest.raises(StoreLocked, match="in use"):  # an embedded Replica too
            await Replica(first.db).start()
        # the first one never noticed: it writes and reports its vectors as before
        await api.patch(memory["id"], content="still the only writer")
        status = await api.status()
        assert status["version_vectors"][U1]["hub"] == 2
    finally:
        first.stop()
    async with Replica(first.db) as replica:  # released on a clean stop
        assert (await replica.get(memory["id"])).content == "still the only writer"


def test_a_locked_file_is_not_even_created(tmp_path: Path) -> None:
    """The lock comes first: a refused opener creates no database, WAL or shared-memory file."""
    db = tmp_path / "new.db"
    holder = DatabaseLock(db)
    holder.acquire()
    try:
        with pytest.raises(StoreLocked, match=f"in use by process {os.getpid()}"):
            SQLiteStore(db).open()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["new.db.lock"]
    finally:
        holder.release()
    store = SQLiteStore(db)
    store.open()
    store.close()


async def test_the_lock_is_released_when_the_holder_is_killed(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    node = ServerProcess(tmp_path, "hub").start()
    memory = await Api(session, node.url).add("acknowledged before kill -9", user_id="u1")
    node.kill()
    node.start()  # the same file, at once: the kernel dropped the lock with the process
    try:
        assert (await Api(session, node.url).get(memory["id"])) is not None
    finally:
        node.stop()


# -- a damaged memory is quarantined -----------------------------------------------------------------


async def test_garbage_json_in_a_record_quarantines_that_memory(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    node = ServerProcess(tmp_path, "hub").start()
    try:
        victim, other = await _two_memories(Api(session, node.url))
        node.stop()
        _sql(
            node.db,
            "UPDATE docs SET record = ? WHERE id = ?",
            '{"id": "' + victim + '", "kind": gar\x00bage',
            victim,
        )
        node.start()  # it used to refuse to start with a traceback
        api = Api(session, node.url)
        assert await _quarantined(api) == [victim]  # found when the cache was warmed on open
        await _serves_the_others(api, session, victim, other)
    finally:
        node.stop()
    assert "Traceback" not in node.log.read_text()
    assert f"memory {victim} quarantined" in node.log.read_text()


async def test_search_serves_the_other_hits_of_a_damaged_memory(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    node = ServerProcess(tmp_path, "hub", extra=["--index"]).start()
    try:
        api = Api(session, node.url)
        victim = (await api.add("refund policy: thirty days", user_id="u1"))["id"]
        other = (await api.add("refund policy for gift cards", user_id="u1"))["id"]
        await eventually(lambda: _found(api, "refund policy", {victim, other}))
        node.stop()
        _sql(node.db, "UPDATE docs SET record = 'garbage' WHERE id = ?", victim)
        node.start()
        status, body = await _call(session, "POST", f"{node.url}/v1/search", json={"query": "refund policy"})
        assert status == 200 and [hit["memory"]["id"] for hit in body["results"]] == [other], body
        assert await _quarantined(api) == [victim]
    finally:
        node.stop()


async def _found(api: Api, query: str, ids: set[str]) -> bool:
    body = await api.call("POST", "/v1/search", {"query": query})
    return {hit["memory"]["id"] for hit in body["results"]} == ids


@pytest.mark.parametrize("where", ["snapshot", "delta"])
async def test_a_corrupt_yrs_state_quarantines_that_memory(
    tmp_path: Path, session: aiohttp.ClientSession, where: str
) -> None:
    node = ServerProcess(tmp_path, "hub").start()
    try:
        victim, other = await _two_memories(Api(session, node.url))
        node.stop()
        garbage = os.urandom(48)
        if where == "snapshot":
            _sql(node.db, "INSERT OR REPLACE INTO doc_states(doc_id, state) VALUES (?, ?)", victim, garbage)
            _sql(
                node.db,
                "UPDATE docs SET snap_id = (SELECT max(id) FROM deltas WHERE doc_id = ?) WHERE id = ?",
                victim,
                victim,
            )
        else:
            _sql(
                node.db,
                "UPDATE deltas SET [update] = ? WHERE doc_id = ? AND id = "
                "(SELECT max(id) FROM deltas WHERE doc_id = ?)",
                garbage,
                victim,
                victim,
            )
        node.start()
        api = Api(session, node.url)
        status, error = await _call(
            session, "PATCH", f"{node.url}/v1/memories/{victim}", json={"content": "y"}
        )
        assert status == 503 and error["error"] == "MemoryQuarantined", (status, error)  # it used to be 400
        await _serves_the_others(api, session, victim, other)
    finally:
        node.stop()
    assert "Traceback" not in node.log.read_text()


async def test_deltas_for_a_quarantined_memory_wait_and_the_rest_of_the_stream_applies(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """A peer keeps writing both memories: the damaged node applies every change but those to the
    quarantined memory, which wait (they are not refused for good, and no vector claims them)."""
    hub = ServerProcess(tmp_path, "hub").start()
    laptop = ServerProcess(tmp_path, "laptop", peers=[hub.url], channels=[U1]).start()
    try:
        hub_api, laptop_api = Api(session, hub.url), Api(session, laptop.url)
        victim, other = await _two_memories(hub_api)
        await eventually(lambda: _has(laptop_api, other, "a memory that stays fine"))
        await eventually(lambda: _has(laptop_api, victim, "the memory that gets damaged, changed"))
        hub.stop()
        _sql(hub.db, "UPDATE deltas SET [update] = ? WHERE doc_id = ?", os.urandom(40), victim)
        hub.start()
        await laptop_api.patch(victim, content="changed on the laptop")
        await laptop_api.patch(other, content="also changed on the laptop")
        await eventually(lambda: _has(hub_api, other, "also changed on the laptop"))
        status = await hub_api.status()
        assert status["storage"]["quarantined"][0]["memory_id"] == victim
        assert status["pending_deltas"] >= 1
        # the laptop's change to the damaged memory came first: the hub's vector stops before it
        assert status["version_vectors"][U1].get("laptop", 0) == 0
        assert (await laptop_api.status())["version_vectors"][U1]["laptop"] == 2
    finally:
        laptop.stop()
        hub.stop()
    assert "Traceback" not in hub.log.read_text()


async def test_crdtmem_check_lists_every_damaged_memory_of_a_stopped_file(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    node = ServerProcess(tmp_path, "hub").start()
    try:
        api = Api(session, node.url)
        bad_record, fine = await _two_memories(api)
        bad_state = (await api.add("its deltas get damaged", user_id="u1"))["id"]
        running = _check(node.db)
        assert running.returncode == 3 and "is in use" in running.stderr, running.stderr
    finally:
        node.stop()
    clean = _check(node.db)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads(clean.stdout) == {
        "db": str(node.db),
        "ok": True,
        "integrity": ["ok"],
        "memories": 3,
        "damaged": [],
        "quarantined": [],
    }
    _sql(node.db, "UPDATE docs SET record = 'garbage' WHERE id = ?", bad_record)
    _sql(node.db, "UPDATE deltas SET [update] = ? WHERE doc_id = ?", os.urandom(40), bad_state)
    damaged = _check(node.db)
    assert damaged.returncode == 1, damaged.stderr
    report = json.loads(damaged.stdout)
    assert not report["ok"] and report["memories"] == 3
    assert sorted(d["memory_id"] for d in report["damaged"]) == sorted([bad_record, bad_state])
    assert fine not in damaged.stdout
    assert all(d["reason"] for d in report["damaged"])


def _check(db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crdtmem", "check", "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- a garbage page ----------------------------------------------------------------------------------


async def test_a_garbage_page_is_reported_and_answered_with_json_errors(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    node = ServerProcess(tmp_path, "hub").start()
    try:
        api = Api(session, node.url)
        for n in range(120):
            await api.add(f"memory {n} " + "words to fill pages " * 40, user_id="u1")
        node.stop()
        with sqlite3.connect(node.db) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            leaves = [
                n
                for (n,) in conn.execute(
                    "SELECT pageno FROM dbstat WHERE name = 'deltas' AND pagetype = 'leaf'"
                )
            ]
        conn.close()
        page = leaves[len(leaves) // 2]
        with node.db.open("r+b") as f:
            f.seek((page - 1) * page_size)
            f.write(os.urandom(page_size))
        node.start()  # it starts, and says what it found
        status = await api.status()
        assert status["storage"]["integrity"] != ["ok"] and status["storage"]["integrity"], status["storage"]
        assert await _metric(session, node.url, "crdtmem_storage_integrity_problems") >= 1
        assert "integrity check" in node.log.read_text()
        body = msgpack.packb({"channels": [U1], "vectors": {}, "limit": 1000, "v": 2})
        status_code, error = await _call(session, "POST", f"{node.url}/v1/sync/pull", data=body)
        assert status_code == 503 and error["error"] == "StorageError", (
            error
        )  # it used to be a plain-text 500
        assert "malformed" in error["message"]
        for path in ("/v1/memories", "/v1/conflicts", "/v1/status", "/healthz"):
            code, _ = await _call(session, "GET", node.url + path)  # JSON, whatever it could read
            assert code in (200, 503), (path, code)
    finally:
        node.stop()
    assert "Traceback" not in node.log.read_text()


def test_a_file_that_does_not_open_exits_4_with_one_line(tmp_path: Path) -> None:
    """Garbage where the schema lives (page 1): the node cannot open the file at all. It says so in
    one line and exits 4, distinct from a lock (3) and from bad arguments (2)."""
    db = tmp_path / "hub.db"

    async def fill() -> None:
        async with Replica(db, replica_id="hub") as replica:
            await replica.add("something", user_id="u1")

    asyncio.run(fill())
    with db.open("r+b") as f:
        f.write(os.urandom(4096))
    done = subprocess.run(
        [sys.executable, "-m", "crdtmem", "serve", "--db", str(db), "--replica-id", "hub", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 4, done.stderr
    assert "crdtmem serve: cannot open store" in done.stderr and "Traceback" not in done.stderr, done.stderr


async def test_an_unexpected_failure_answers_a_json_500(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """Damage no check names (garbage in a conflict's stored values) fails inside a handler: the
    answer is a JSON 500, the failure is logged, and the node goes on serving."""
    node = ServerProcess(tmp_path, "hub").start()
    try:
        api = Api(session, node.url)
        memory = await api.add("a fact", user_id="u1")
        node.stop()
        _sql(
            node.db,
            "INSERT INTO conflicts(doc_id, field, user_id, tenant_id, vals) "
            "VALUES (?, 'content', 'u1', NULL, ?)",
            memory["id"],
            "not json",
        )
        node.start()
        status, error = await _call(session, "GET", f"{node.url}/v1/conflicts")
        assert status == 500 and error["error"] == "InternalError", error
        assert (await api.patch(memory["id"], content="served"))["content"] == "served"
    finally:
        node.stop()
    assert "GET /v1/conflicts failed" in node.log.read_text()


# -- every error body is JSON ------------------------------------------------------------------------


async def _raw(url: str, request: bytes) -> tuple[int, bytes, bytes]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="line-too-long"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20_000 + b"\r\n\r\n", id="header-too-large"
        ),
        pytest.param(b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", id="bad-method"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", id="bad-header"),
        pytest.param(
            b"GET /v1/memories/%ff%fe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", id="bad-encoding"
        ),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, id="tls-on-http"),
    ],
)
async def test_aiohttps_own_refusals_answer_json(tmp_path: Path, request_bytes: bytes) -> None:
    node = ServerProcess(tmp_path, "hub").start()
    try:
        status, head, body = await _raw(node.url, request_bytes)
        assert 400 <= status < 500, head
        assert b"application/json" in head.lower(), head
        error = json.loads(body)
        assert error["error"] and error["message"], error
        assert len(error["message"]) <= 301, "the refused request was echoed back"
    finally:
        node.stop()
    assert "Traceback" not in node.log.read_text()


async def _has(api: Api, memory_id: str, content: str) -> bool:
    memory = await api.get(memory_id)
    return memory is not None and memory["content"] == content
