"""benchmarks/_bus_bare.py: the baselines ``bench_bus.py`` measures crdtmem against do what they claim,
on a real NATS server; and the benchmark's latency case runs end to end, bounded."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from pycrdt import Doc, Map

from tests.support.scripts import BENCHMARKS, load_benchmark

bare = load_benchmark("_bus_bare")
SIZE = 535


def _pair(url: str, tag: str, root) -> tuple[Any, Any]:
    """A CRDT floor's writer and a reader of its messages (one key, files under ``root``)."""
    key = bytes(range(32))
    writer = bare.CrdtFloor(url, tag, SIZE, root, "NORMAL", key=key)
    return writer, bare.CrdtFloor(url, tag, SIZE, root, "NORMAL", key=key, writer=False)


async def _read(floor) -> tuple[list[int], asyncio.Task[None], asyncio.Event]:
    seen: list[int] = []
    stop = asyncio.Event()
    task = await floor.durable_consumer("reader", seen.append, stop)
    return seen, task, stop


async def _until(condition, task: asyncio.Task[None], timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            if task.done():
                task.result()  # the reader failed: raise its error
            await asyncio.sleep(0.01)


async def test_the_crdt_floor_carries_signed_updates_that_the_reader_applies_and_stores(
    nats_server, tmp_path
) -> None:
    writer, reader = _pair(nats_server.url, "w", tmp_path)
    async with writer, reader:
        seen, task, stop = await _read(reader)
        sent = {}
        for i in (0, 1, 2, 101):  # 101 changes fact 1 again
            sent[i] = writer.write(i)
            await writer.publish_data(i, sent[i])
        await _until(lambda: len(seen) == 4, task)
        stop.set()
        await task
    assert seen == [0, 1, 2, 101]
    copies = [Doc() for _ in range(3)]  # a reader's documents, fed the updates in order
    for i, data in sent.items():
        # the size of crdtmem's message, give or take an overwritten value's delete set
        assert abs(len(data) - SIZE) <= 16
        signature, update = data[: bare.SIG], data[bare.SIG :]
        writer.public.verify(signature, update)
        copy = copies[i % bare.FACTS]
        copy.apply_update(update)  # the change of one transaction, on what came before it
        assert copy.get("m", type=Map)["content"].startswith(f"{i}:")
    for name in ("writer", "reader"):  # each side committed every update and the facts' states
        conn = sqlite3.connect(tmp_path / f"floor-w-{name}.db")
        assert conn.execute("SELECT count(*) FROM log").fetchone() == (4,)
        states = dict(conn.execute("SELECT id, data FROM state"))
        conn.close()
        assert sorted(states) == [0, 1, 2]
        doc = Doc()
        doc.apply_update(states[1])
        assert doc.get("m", type=Map)["content"].startswith("101:")


async def test_the_crdt_floor_reader_takes_an_overwrite_before_the_write_it_overwrites(
    nats_server, tmp_path
) -> None:
    # as with the throughput case's 16 publishers: the stream's order is not the writes' order
    writer, reader = _pair(nats_server.url, "o", tmp_path)
    async with writer, reader:
        seen, task, stop = await _read(reader)
        first, second = writer.write(1), writer.write(101)
        await writer.publish_data(101, second)
        await _until(lambda: len(seen) == 1, task)
        await writer.publish_data(1, first)
        await _until(lambda: len(seen) == 2, task)
        stop.set()
        await task
    assert seen == [101, 1]
    conn = sqlite3.connect(tmp_path / "floor-o-reader.db")
    state = conn.execute("SELECT data FROM state WHERE id = 1").fetchone()[0]
    conn.close()
    doc = Doc()
    doc.apply_update(state)
    assert doc.get("m", type=Map)["content"].startswith("101:")


async def test_the_crdt_floor_applies_nothing_it_cannot_verify(nats_server, tmp_path) -> None:
    writer, reader = _pair(nats_server.url, "t", tmp_path)
    async with writer, reader:
        seen, task, stop = await _read(reader)
        data = bytearray(writer.write(0))
        data[-1] ^= 1
        await writer.publish_data(0, bytes(data))
        with pytest.raises(InvalidSignature):
            await _until(lambda: False, task)
        stop.set()
    assert seen == []
    conn = sqlite3.connect(tmp_path / "floor-t-reader.db")
    assert conn.execute("SELECT count(*) FROM log").fetchone() == (0,)
    conn.close()


def test_the_benchmark_runs_every_case_end_to_end(tmp_path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "bench_bus.py"),
            *("--quick", "--rounds", "1", "--writes", "5", "--count", "64", "--catchup", "64"),
            *("--synchronous", "NORMAL"),
            *("--dir", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for case in ("crdtmem", "crdt floor", "floor", "bare"):  # each case's row of p50 and p99
        assert re.search(rf"^{case} +\d+\.\d+ +\d+\.\d+", done.stdout, flags=re.M), done.stdout
    assert "p50 <= 2x the CRDT floor" in done.stdout
    assert "replicated deltas/s vs the CRDT floor" in done.stdout
    assert "catch-up of a node down for 64 updates" in done.stdout
