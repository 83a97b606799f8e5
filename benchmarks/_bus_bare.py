"""The baselines of ``bench_bus.py``: a bare nats-py JetStream pipeline, and the floor (the same
plus a signature and a durable SQLite commit on each side). See ``bench_bus.py``'s docstring."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import nats
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js import api


class Bare:
    """A bare nats-py JetStream pipeline: a stream, publishers, durable pull consumers that ack."""

    def __init__(self, url: str, tag: str, size: int):
        self.url, self.tag, self.size = url, tag, size
        self.subject = f"bare{tag}.x"

    async def __aenter__(self) -> Bare:
        self.pub = await nats.connect(self.url)
        self.js = self.pub.jetstream()
        await self.js.add_stream(name=f"BARE{self.tag.upper()}", subjects=[f"bare{self.tag}.>"])
        self.subs: list[Any] = []
        return self

    async def __aexit__(self, *exc: object) -> None:
        for nc in [self.pub, *[s[0] for s in self.subs]]:
            await nc.close()

    async def consumer(self, name: str) -> Any:
        nc = await nats.connect(self.url)
        js = nc.jetstream()
        config = api.ConsumerConfig(ack_policy=api.AckPolicy.EXPLICIT, max_ack_pending=20_000)
        sub = await js.pull_subscribe(
            self.subject, durable=name, stream=f"BARE{self.tag.upper()}", config=config
        )
        self.subs.append((nc, sub))
        return sub

    def data(self, i: int) -> bytes:
        head = f"{i}:".encode()
        return head + b"x" * max(0, self.size - len(head))

    async def publish(self, i: int) -> None:
        await self.js.publish(self.subject, self.data(i), headers={"Nats-Msg-Id": f"{self.tag}-{i}"})


async def receive(sub: Any, on_message: Any, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            batch = await sub.fetch(256, timeout=1.0)
        except TimeoutError:  # nothing to fetch (nats-py raises its own or asyncio's)
            continue
        for msg in batch:
            on_message(int(msg.data.split(b":", 1)[0]))
        for msg in batch:
            await msg.ack()


class Floor(Bare):
    """The bare pipeline plus what no durable, authenticated replica can skip: the writer signs each
    message (Ed25519, 64 bytes of its size) and commits it to its own SQLite log before publishing
    it; a reader verifies every signature and commits what it fetched to its own SQLite file, in one
    transaction, before acknowledging it and showing it. WAL, crdtmem's ``synchronous``.

    With the writer and its readers in processes of their own, each process makes its ``Floor``
    with the same ``key`` (raw private bytes), and only the writer's (``writer``) opens the log."""

    def __init__(
        self,
        url: str,
        tag: str,
        size: int,
        root: Path,
        synchronous: str,
        key: bytes | None = None,
        writer: bool = True,
    ):
        super().__init__(url, tag, size)
        self.root, self.synchronous = root, synchronous
        self.key = Ed25519PrivateKey.from_private_bytes(key) if key else Ed25519PrivateKey.generate()
        self.public = self.key.public_key()
        self.log = self.database("writer") if writer else None

    def database(self, name: str) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.root / f"floor-{self.tag}-{name}.db", isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("CREATE TABLE IF NOT EXISTS log(id INTEGER PRIMARY KEY, data BLOB)")
        return conn

    def data(self, i: int) -> bytes:
        body = super().data(i)[: self.size - 64]
        return body + self.key.sign(body)

    def write(self, i: int) -> bytes:
        """Node A's durable write: signed, committed."""
        data = self.data(i)
        assert self.log is not None, "a reader's Floor has no log to write"
        commit(self.log, [data])
        return data

    async def publish_data(self, i: int, data: bytes) -> None:
        await self.js.publish(self.subject, data, headers={"Nats-Msg-Id": f"{self.tag}-{i}"})

    async def durable_consumer(self, name: str, on_message: Any, stop: asyncio.Event) -> asyncio.Task[None]:
        sub = await self.consumer(name)
        conn = self.database(name)

        async def run() -> None:
            while not stop.is_set():
                try:
                    batch = await sub.fetch(256, timeout=1.0)
                except TimeoutError:
                    continue
                for msg in batch:
                    self.public.verify(msg.data[-64:], msg.data[:-64])
                rows = [msg.data for msg in batch]
                if len(rows) == 1:
                    commit(conn, rows)
                else:  # as crdtmem's group commits: on a worker thread, the loop serves meanwhile
                    await asyncio.to_thread(commit, conn, rows)
                for msg in batch:
                    on_message(int(msg.data.split(b":", 1)[0]))
                for msg in batch:
                    await msg.ack()
            conn.close()

        return asyncio.create_task(run())

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        if self.log is not None:
            self.log.close()


def commit(conn: sqlite3.Connection, rows: list[bytes]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO log(data) VALUES (?)", [(row,) for row in rows])
    conn.execute("COMMIT")
