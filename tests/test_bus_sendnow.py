"""crdtmem.bus.sendnow on a real NATS server: a JetStream publish handed to the socket before any
turn of the event loop, its PubAck (or the stream's duplicate) in the future it returns."""

from __future__ import annotations

import asyncio

import nats
from nats.js import api

from crdtmem.bus.sendnow import start_publish, write_pending


async def test_a_publish_reaches_the_socket_before_the_loop_turns(nats_server) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream(timeout=30)
        await js.add_stream(name="NOW", subjects=["now.>"], storage=api.StorageType.FILE)
        await js.publish("now.warm", b"w", stream="NOW")  # the PubAck subscription exists now
        acks = [start_publish(js, "now.x", f"m{i}".encode(), f"id-{i}", "NOW") for i in range(3)]
        assert nc._pending, "buffered, not written yet"
        write_pending(nc)
        assert not nc._pending and nc._pending_data_size == 0  # handed to the socket, no turn taken
        assert await asyncio.wait_for(asyncio.gather(*acks), 30) == [False, False, False]
        again = start_publish(js, "now.x", b"m0", "id-0", "NOW")
        write_pending(nc)
        assert await asyncio.wait_for(again, 30) is True, "the stream knew the message id"
        info = await js.stream_info("NOW")
        assert info.state.messages == 4
    finally:
        await nc.close()
