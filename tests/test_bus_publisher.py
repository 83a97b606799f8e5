"""crdtmem.bus.publisher: the publishing loop stops when it is told to, even when the PubAck it
awaits lands in the very turn of the loop its cancellation does."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import Any

from crdtmem import Replica
from crdtmem.bus.outbox import Outbox
from crdtmem.bus.publisher import publish_loop
from crdtmem.bus.settings import BusSettings
from crdtmem.bus.subjects import Layout
from crdtmem.metrics import Metrics


class HeldJetStream:
    """``publish_async`` hands out PubAck futures that the test settles."""

    def __init__(self) -> None:
        self.acks: list[asyncio.Future[Any]] = []
        self.published = asyncio.Event()

    async def publish_async(self, subject: str, data: bytes, **_: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.acks.append(future)
        self.published.set()
        return future


async def test_the_loop_stops_when_cancelled_as_its_puback_lands(tmp_path) -> None:
    async with Replica(tmp_path / "a.db", replica_id="a") as a:
        await a.add("in the log before the session", user_id="u1", memory_id="m1")
        outbox = Outbox(a, Layout.of(), Metrics())
        js = HeldJetStream()
        settings = BusSettings(["nats://127.0.0.1:1"])
        task = asyncio.create_task(
            publish_loop(SimpleNamespace(), js, outbox, settings, Metrics(), random.Random(1))
        )
        await asyncio.wait_for(js.published.wait(), 5)
        js.acks[0].set_result(SimpleNamespace(duplicate=False))
        task.cancel()  # in the same turn: the PubAck and the cancellation race
        done, _ = await asyncio.wait({task}, timeout=5)
        assert done, "the publishing loop swallowed its cancellation and went on waiting"
        assert task.cancelled()
