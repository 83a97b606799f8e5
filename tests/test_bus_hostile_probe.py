"""Hostile publishers on the bus, on a real JetStream server: anyone who may publish on a channel's
subject can claim entries that are not theirs (a forged delta under a node's origin and its next
sequence numbers, a message published ahead under the id an entry will have). Such a message is
refused and changes nothing: the node still publishes its own writes with those sequence numbers
when they come, and the other nodes get them. Anyone may also send requests naming any node: a
flood of them under new names keeps the node's rate buckets bounded, and the node serves the
others."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgpack
import nats

from crdtmem import Replica
from crdtmem.access import Principal
from crdtmem.bus import BusClient, BusSettings, Layout, message_id
from crdtmem.bus.pull import pull, pull_subject
from crdtmem.bus.requests import DOMAIN
from crdtmem.engine import payload as wire
from crdtmem.engine.signing import Signer
from crdtmem.errors import NotFound
from tests.support.rest import eventually

U1 = "user:u1:memories"
BUS = Principal("user:bus", ("*",), ("*",), ("*",))
"""The bus may introduce every origin, signed by it (no unsigned delta of any)."""


@asynccontextmanager
async def _fleet(tmp_path: Path, url: str) -> AsyncIterator[tuple[Replica, BusClient, Replica]]:
    """Nodes a and b on the bus, both ready."""
    settings = BusSettings([url], principal=BUS)
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
        BusClient(a, settings) as a_bus,
        BusClient(b, settings) as b_bus,
    ):
        await eventually(lambda: _ready(a_bus, b_bus), what="a and b on the bus")
        yield a, a_bus, b


async def _ready(*buses: BusClient) -> bool:
    return all(bus.ready for bus in buses)


async def _publish(url: str, messages: list[tuple[bytes, dict[str, str] | None]]) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for data, headers in messages:
            await js.publish(Layout.of().subject(U1), data, headers=headers)
    finally:
        await nc.close()


async def _holds(replica: Replica, memory_id: str) -> bool:
    try:
        await replica.get(memory_id)
    except NotFound:
        return False
    return True


async def test_a_forged_claim_on_a_nodes_next_entries_does_not_keep_its_writes_off_the_bus(
    tmp_path, nats_server
) -> None:
    async with Replica(None, replica_id="a") as twin:  # another replica under a's name
        for n in range(3):
            await twin.add("forged", user_id="u1", memory_id=f"forged-{n}")
        exported = wire.decode(await twin.export_since([U1]))
    unsigned = [dataclasses.replace(d, signature=None, header=None) for d in exported.deltas]
    assert [d.seqs[U1] for d in unsigned] == [1, 2, 3]  # a's next three entries on u1
    async with _fleet(tmp_path, nats_server.url) as (a, a_bus, b):
        await _publish(nats_server.url, [(wire.encode(wire.Payload("evil", unsigned, {}, {})), None)])
        consumer = a_bus.consumers["CRDTMEM_USERS"]
        await eventually(lambda: _consumed(consumer.consumed, 1), what="a took the forgery")
        for n in range(3):
            await a.add(f"real {n}", user_id="u1", memory_id=f"real-{n}")
        for n in range(3):
            await eventually(lambda n=n: _holds(b, f"real-{n}"), what=f"b holds a's write {n}")  # type: ignore[misc]
        assert a_bus.outbox is not None and a_bus.outbox.published == 3
        for n in range(3):
            assert not await _holds(b, f"forged-{n}") and not await _holds(a, f"forged-{n}")
        assert a.version_vector(U1) == b.version_vector(U1) == {"a": 3}


async def test_a_message_published_ahead_under_an_entrys_id_does_not_make_the_stream_drop_it(
    tmp_path, nats_server
) -> None:
    digest = hashlib.sha256(U1.encode()).hexdigest()[:24]
    guesses = [f"a:1:{digest}", message_id("a", U1, 1, b"junk"), f"a:1-1:{digest}"]
    async with _fleet(tmp_path, nats_server.url) as (a, _, b):
        await _publish(nats_server.url, [(b"junk", {"Nats-Msg-Id": guess}) for guess in guesses])
        await asyncio.sleep(0.5)  # the junk is in the stream, inside its duplicate window
        await a.add("real", user_id="u1", memory_id="real")
        await eventually(lambda: _holds(b, "real"), what="b holds a's write")
        assert b.version_vector(U1) == {"a": 1}


async def _consumed(count: int, at_least: int) -> bool:
    return count >= at_least


def _offer_from(signer: Signer, node: str, reply: str) -> bytes:
    """A pull offer request signed by ``signer`` under any node's name."""
    body = {"op": "offer", "channels": None, "vectors": {}, "from": node, "key": signer.public}
    packed = msgpack.packb({**body, "reply": reply, "on": "pull"}, use_bin_type=True)
    sig = signer.sign_message(DOMAIN + hashlib.sha256(packed).digest())
    return bytes(msgpack.packb({"body": packed, "sig": sig}, use_bin_type=True))


async def test_a_flood_of_requests_under_new_names_keeps_the_rate_buckets_bounded(
    tmp_path, nats_server
) -> None:
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "c.db", replica_id="c") as c,
        BusClient(a, BusSettings([nats_server.url])) as bus,
    ):
        await a.add("a fact", user_id="u1", memory_id="fact")
        await eventually(lambda: _serving(bus), what="a serving pulls")
        bus.limiter.max_buckets = 100
        signer, nc = Signer.generate(), await nats.connect(nats_server.url)
        try:
            for n in range(1000):
                inbox = f"_INBOX.flood.{n}"
                await nc.publish(
                    pull_subject(Layout.of()), _offer_from(signer, f"sybil-{n}", inbox), reply=inbox
                )
            await nc.flush()
            # served after the flood (offers are collected for the whole wait: room for a slow machine)
            pulled = await pull(nc, c, Layout.of(), BUS, wait=5.0)
        finally:
            await nc.close()
        assert pulled.node == "a" and await _holds(c, "fact")
        assert len(bus.limiter._buckets) <= 100


async def _serving(bus: BusClient) -> bool:
    return bus.ready and bus.pull_server is not None
