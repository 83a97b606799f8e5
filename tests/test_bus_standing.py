"""crdtmem.bus.standing on a real NATS server: a pull request stays standing, batches are bounded,
nothing is acknowledged by it, expired requests are renewed, and a restarted server is asked again."""

from __future__ import annotations

import asyncio
import time

import nats
import nats.errors
import pytest
from nats.js import api

from crdtmem.bus.standing import StandingPull

SUBJECT = "standing.x"


async def _consumer(url: str, *, ack_wait: float = 30.0):  # type: ignore[no-untyped-def]
    nc = await nats.connect(url, reconnect_time_wait=0.2, max_reconnect_attempts=-1)
    js = nc.jetstream()
    await js.add_stream(name="STANDING", subjects=["standing.>"], storage=api.StorageType.FILE)
    config = api.ConsumerConfig(
        durable_name="c", ack_policy=api.AckPolicy.EXPLICIT, ack_wait=ack_wait, max_deliver=-1
    )
    await js.add_consumer("STANDING", config)
    sub = await js.pull_subscribe_bind(durable="c", stream="STANDING")
    return nc, js, sub


async def test_messages_come_through_one_standing_request_in_bounded_batches(nats_server) -> None:
    nc, js, sub = await _consumer(nats_server.url)
    try:
        # requests that outlive the test: how many are made depends on the credit alone, not on
        # how long a loaded machine takes between two calls
        pull = StandingPull(sub, 4, expires=600.0)
        with pytest.raises(TimeoutError):
            await pull.next_batch(idle=0.2)  # nothing yet: the request stands meanwhile
        assert pull.requests == 1 and pull.credit == 4
        for i in range(3):  # one at a time, as writes come: no new request for any of them
            await js.publish(SUBJECT, f"m{i}".encode())
            # a lone message comes back at once, not after the idle wait nor once a batch is full
            async with asyncio.timeout(30):
                batch = await pull.next_batch(idle=120)
            assert [m.data for m in batch] == [f"m{i}".encode()]
            await batch[0].ack()
        assert pull.requests == 2, "asked again only once half the credit was used"
        assert pull.credit <= 4
        for i in range(10):
            await js.publish(SUBJECT, f"n{i}".encode())
        got: list[bytes] = []
        while len(got) < 10:
            batch = await pull.next_batch(idle=30)
            assert 1 <= len(batch) <= 4, "a batch never exceeds the credit"
            assert pull.credit <= 4
            got += [m.data for m in batch]
            for m in batch:
                await m.ack()
        assert got == [f"n{i}".encode() for i in range(10)]
    finally:
        await nc.close()


async def test_nothing_is_acknowledged_by_it_an_unacked_message_comes_again(nats_server) -> None:
    nc, js, sub = await _consumer(nats_server.url, ack_wait=2.0)
    try:
        pull = StandingPull(sub, 8)
        await js.publish(SUBJECT, b"once")
        first = await pull.next_batch(idle=30)
        assert [m.data for m in first] == [b"once"]  # not acked (as a commit that failed)
        again = await pull.next_batch(idle=30)
        assert [m.data for m in again] == [b"once"]
        assert again[0].metadata.num_delivered == 2
        await again[0].ack()
        # acknowledged: not delivered again, even past another ack wait
        with pytest.raises(TimeoutError):
            await pull.next_batch(idle=3.0)
    finally:
        await nc.close()


async def test_an_expired_request_is_renewed(nats_server) -> None:
    nc, js, sub = await _consumer(nats_server.url)
    try:
        pull = StandingPull(sub, 4, expires=0.3)
        deadline = time.monotonic() + 30
        while pull.requests < 2:  # the request expired (408) and was asked again
            assert time.monotonic() < deadline, "the expired request was not renewed"
            with pytest.raises(TimeoutError):
                await pull.next_batch(idle=0.5)
        await js.publish(SUBJECT, b"late")
        batch = await pull.next_batch(idle=30)
        assert [m.data for m in batch] == [b"late"]
    finally:
        await nc.close()


async def test_after_the_server_restarts_the_request_is_made_again(nats_server) -> None:
    nc, js, sub = await _consumer(nats_server.url)
    try:
        pull = StandingPull(sub, 4, expires=30.0)
        with pytest.raises(TimeoutError):
            await pull.next_batch(idle=0.2)
        nats_server.kill()
        nats_server.start()
        deadline = time.monotonic() + 60
        while not nc.is_connected:
            assert time.monotonic() < deadline, "the client did not reconnect"
            await asyncio.sleep(0.05)
        while True:  # JetStream answers once it has recovered its streams
            try:
                await js.publish(SUBJECT, b"after the restart", timeout=1.0)
                break
            except nats.errors.Error:
                assert time.monotonic() < deadline, "JetStream did not come back"
        batch = await pull.next_batch(idle=20.0)  # well before the old request would have expired
        assert [m.data for m in batch] == [b"after the restart"]
        await batch[0].ack()
    finally:
        await nc.close()
