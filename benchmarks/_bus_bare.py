"""The baselines of ``bench_bus.py``: a bare nats-py JetStream pipeline; the floor (the same plus a
signature and a durable SQLite commit on each side); the CRDT floor (the floor carrying a raw pycrdt
update, which the reader applies: the physical floor of docs/benchmarks.md, over JetStream). See
``bench_bus.py``'s docstring."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nats.js import api
from pycrdt import Doc, Map

Take = Callable[[list[Any]], tuple[list[bytes], dict[int, bytes], list[int]]]
Show = Callable[[int], None]
"""A reader's work on a fetched batch before its commit, and its read of a write after it."""


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

    def reader(self) -> tuple[Take, Show]:
        """A reader's work on a fetched batch before its commit (verify: the rows to commit, the
        states to save, the writes they carry), and its read of write ``i`` after it (none here)."""

        def take(batch: list[Any]) -> tuple[list[bytes], dict[int, bytes], list[int]]:
            for msg in batch:
                self.public.verify(msg.data[-64:], msg.data[:-64])
            return [msg.data for msg in batch], {}, [int(msg.data.split(b":", 1)[0]) for msg in batch]

        return take, lambda i: None

    async def durable_consumer(self, name: str, on_message: Any, stop: asyncio.Event) -> asyncio.Task[None]:
        sub = await self.consumer(name)
        conn = self.database(name)
        take, show = self.reader()

        async def run() -> None:
            while not stop.is_set():
                try:
                    batch = await sub.fetch(256, timeout=1.0)
                except TimeoutError:
                    continue
                rows, states, seen = take(batch)
                if len(rows) == 1:
                    commit(conn, rows, states)
                else:  # as crdtmem's group commits: on a worker thread, the loop serves meanwhile
                    await asyncio.to_thread(commit, conn, rows, states)
                for i in seen:
                    show(i)
                    on_message(i)
                for msg in batch:
                    await msg.ack()
            conn.close()

        return asyncio.create_task(run())

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        if self.log is not None:
            self.log.close()


SIG = 64
"""Bytes of an Ed25519 signature: a CRDT floor message is the signature, then the update."""
FACTS = 100
"""Facts of the CRDT floor, as in crdtmem's latency case: write ``i`` changes fact ``i % 100``."""


def fact_docs() -> list[Doc]:
    """One raw pycrdt document per fact (as crdtmem keeps one per memory), a map ``m`` in each."""
    docs = [Doc() for _ in range(FACTS)]
    for doc in docs:
        doc.get("m", type=Map)
    return docs


def _update_overhead() -> int:
    """Bytes of a fact's update besides its text, on a probe document."""
    doc = fact_docs()[0]
    before = doc.get_state()
    doc["m"]["content"] = "x" * 100
    return len(doc.get_update(before)) - 100


class CrdtFloor(Floor):
    """The floor carrying what a memory-sync engine carries: the writer changes one of 100 facts, each
    a raw pycrdt document, signs the transaction's update, commits it with that document's state
    (``bench_sync_latency.py``'s floor: the update appended, the state saved) and publishes the
    signature and the update; a reader verifies the signature, applies the update to its copy of the
    document, commits the same way (one transaction per batch), reads the fact back (visible), then
    acknowledges. Nothing else: no record, no vectors, no authorization, no event. Which fact a
    message changes travels in its message id (crdtmem's payload names its document)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.docs = fact_docs()
        self._overhead = _update_overhead()  # update bytes besides the fact's text (then the last write's)

    def database(self, name: str) -> sqlite3.Connection:
        conn = super().database(name)
        conn.execute("CREATE TABLE IF NOT EXISTS state(id INTEGER PRIMARY KEY, data BLOB)")
        return conn

    def data(self, i: int) -> bytes:
        """Write ``i`` as a signed update of fact ``i % 100``'s document (about ``size`` bytes)."""
        text = f"{i}:".ljust(max(1, self.size - SIG - self._overhead), "x")
        doc = self.docs[i % FACTS]
        before = doc.get_state()
        doc["m"]["content"] = text
        update = doc.get_update(before)
        self._overhead = len(update) - len(text)
        return self.key.sign(update) + update

    def write(self, i: int) -> bytes:
        data = self.data(i)
        assert self.log is not None, "a reader's CrdtFloor has no log to write"
        commit(self.log, [data[SIG:]], {i % FACTS: self.docs[i % FACTS].get_update()})
        return data

    def reader(self) -> tuple[Take, Show]:
        docs = fact_docs()

        def take(batch: list[Any]) -> tuple[list[bytes], dict[int, bytes], list[int]]:
            updates, seen = [], []
            for msg in batch:
                i = int(msg.headers["Nats-Msg-Id"].rsplit("-", 1)[1])
                update = msg.data[SIG:]
                self.public.verify(msg.data[:SIG], update)  # nothing applied before it is verified
                docs[i % FACTS].apply_update(update)
                updates.append(update)
                seen.append(i)
            return updates, {fact: docs[fact].get_update() for fact in {i % FACTS for i in seen}}, seen

        def show(i: int) -> None:
            # the fact read back: visible (with 16 publishers an overwrite may come before the write
            # it overwrites; Yrs holds it until that one is applied, as causal delivery would, and
            # the floor counts it at once: generous to the floor)
            docs[i % FACTS]["m"].get("content")

        return take, show


def commit(conn: sqlite3.Connection, rows: list[bytes], states: dict[int, bytes] | None = None) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO log(data) VALUES (?)", [(row,) for row in rows])
    if states:
        conn.executemany("INSERT OR REPLACE INTO state(id, data) VALUES (?, ?)", list(states.items()))
    conn.execute("COMMIT")
