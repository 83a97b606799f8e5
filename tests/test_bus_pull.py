"""Pull since a version vector over the bus (crdtmem.bus.pull), on a real JetStream server: a node
gets exactly what it lacks, from deltas or (behind the serving node's folded log) from document
states; a puller gets only the channels it may read; requests are signed and rate-limited per node,
so a flood from one node is refused with a clear error while another node's pulls are served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import nats
import pytest

from crdtmem import Replica
from crdtmem.access import AccessDenied, Principal
from crdtmem.bus import BusClient, BusSettings, Layout
from crdtmem.bus.pull import MAX_REQUEST_BYTES, pull, pull_subject
from crdtmem.bus.requests import open_request, sign_request
from crdtmem.errors import TooManyRequests
from tests.support.rest import Api, converged, eventually
from tests.test_bus_faults import bus_node, ready

U1, U2 = "user:u1:memories", "user:u2:memories"

OFFERS_S = 2.0
"""How long a pull that must find the serving node waits for its offer (the default, half a second,
is short for a loaded machine: an offer that comes later is not taken, and the pull finds no node)."""


async def _serving(tmp_path: Path, url: str, **settings: Any) -> tuple[Replica, BusClient]:
    """Node a with 20 facts of u1 and 10 of u2 (40 log entries), on the bus."""
    a = await Replica(tmp_path / "a.db", replica_id="a").start()
    for n in range(20):
        fact = await a.add(f"u1 fact {n}", user_id="u1")
        if n % 2:
            await a.update(fact.id, content=f"u1 fact {n}, again")
    for n in range(10):
        await a.add(f"u2 fact {n}", user_id="u2")
    bus = await BusClient(a, BusSettings([url], **settings)).start()
    await eventually(lambda: _ready(bus), what="a on the bus")
    return a, bus


async def _ready(bus: BusClient) -> bool:
    return bus.ready and bus.pull_server is not None


@asynccontextmanager
async def _connected(url: str) -> AsyncIterator[Any]:
    nc = await nats.connect(url)
    try:
        yield nc
    finally:
        await nc.close()


async def test_a_node_pulls_exactly_what_it_lacks(tmp_path, nats_server):
    a, bus = await _serving(tmp_path, nats_server.url)
    try:
        async with Replica(tmp_path / "c.db", replica_id="c") as c, _connected(nats_server.url) as nc:
            await c.apply(await a.export_since([U1, U2], limit=12))  # it holds some already
            held = sum(sum(v.values()) for v in c.version_vectors([U1, U2]).values())
            assert held == 12
            pulled = await pull(
                nc, c, Layout.of(), Principal("user:bus", ("*",), ("*",), ("*",)), limit=7, wait=OFFERS_S
            )
            assert pulled.node == "a" and pulled.states_pages == 0
            assert pulled.deltas == 40 - 12  # exactly what it lacked, in pages of at most 7
            assert pulled.pages == 5  # four full pages, and the empty one that says no more
            assert c.version_vectors([U1, U2]) == a.version_vectors([U1, U2])
            assert bus.metrics.value("crdtmem_bus_pulled_deltas_total") == 28
            again = await pull(nc, c, Layout.of(), Principal("user:bus", ("*",), ("*",), ("*",)))
            assert again.node is None and again.deltas == 0  # nobody holds more: nobody offers
            assert {m.content for m in await c.list(user_id="u2")} == {f"u2 fact {n}" for n in range(10)}
    finally:
        await bus.stop()
        await a.stop()


async def test_a_node_behind_the_folded_log_pulls_document_states(tmp_path, nats_server):
    a, bus = await _serving(tmp_path, nats_server.url)
    try:
        await eventually(lambda: _drained(bus), what="a's outbox drained")
        folded = await a.compact()
        assert folded.folded, "a's log folded (no peer holds it back)"
        async with Replica(tmp_path / "c.db", replica_id="c") as c, _connected(nats_server.url) as nc:
            bus_principal = Principal("user:bus", ("*",), ("*",), ("*",), (), True)
            pulled = await pull(nc, c, Layout.of(), bus_principal, wait=OFFERS_S)
            assert pulled.states_pages >= 1
            assert c.version_vectors([U1, U2]) == a.version_vectors([U1, U2])
            assert len(await c.list(user_id="u1")) == 20
    finally:
        await bus.stop()
        await a.stop()


async def _drained(bus: BusClient) -> bool:
    return bool(bus.ready and bus.outbox is not None and bus.outbox.lag() == 0)


async def test_a_puller_gets_only_the_channels_it_may_read(tmp_path, nats_server):
    narrow = Principal("replica:c", read=(U2,))
    a, bus = await _serving(
        tmp_path, nats_server.url, rights_of=lambda name: narrow if name == "replica:c" else None
    )
    everything = Principal("user:bus", ("*",), ("*",), ("*",))
    try:
        async with (
            Replica(tmp_path / "c.db", replica_id="c") as c,
            Replica(tmp_path / "d.db", replica_id="d") as d,
            _connected(nats_server.url) as nc,
        ):
            pulled = await pull(nc, c, Layout.of(), everything, wait=OFFERS_S)
            assert pulled.deltas == 10
            assert c.version_vectors([U1, U2]) == {U1: {}, U2: a.version_vector(U2)}
            assert await c.list(user_id="u1") == []
            # asking for u1 by name changes nothing: it is left out as if unknown
            assert (await pull(nc, c, Layout.of(), everything, [U1])).node is None
            # a node without an entry of its own pulls what the bus principal may read
            assert (await pull(nc, d, Layout.of(), everything, wait=OFFERS_S)).deltas == 40
    finally:
        await bus.stop()
        await a.stop()


async def test_a_request_flood_is_refused_while_another_node_is_served(tmp_path, nats_server):
    a, bus = await _serving(tmp_path, nats_server.url, request_rate=5.0, request_burst=5.0)
    everything = Principal("user:bus", ("*",), ("*",), ("*",))
    try:
        async with (
            Replica(tmp_path / "x.db", replica_id="x") as x,
            Replica(tmp_path / "c.db", replica_id="c") as c,
            _connected(nats_server.url) as flood,
            _connected(nats_server.url) as nc,
        ):

            async def one() -> bytes:
                inbox = flood.new_inbox()
                sub = await flood.subscribe(inbox, max_msgs=1)
                body = {"op": "page", "channels": [U1], "vectors": {}, "limit": 1000}
                await flood.publish(pull_subject(Layout.of(), "a"), sign_request(x, body, inbox), reply=inbox)
                answer = await sub.next_msg(timeout=30)
                return bytes(answer.data)

            flooding = asyncio.gather(*(one() for _ in range(300)))
            await asyncio.sleep(0.05)
            pulled = await pull(nc, c, Layout.of(), everything, wait=OFFERS_S)  # served meanwhile
            answers = await flooding
            refused = [msgpack.unpackb(b).get("error", "") for b in answers if b[:1] != b"\x85"]
            limited = [e for e in refused if isinstance(e, str) and e.startswith("TooManyRequests")]
            assert pulled.deltas == 40
            assert len(limited) >= 250
            assert "retry in" in limited[0]
            assert (
                bus.metrics.value("crdtmem_bus_requests_refused_total", op="page", reason="TooManyRequests")
                >= 250
            )
            bus.limiter.rate = 0.2  # x's bucket, emptied again, refills slowly: its own pull is refused
            await asyncio.gather(*(one() for _ in range(10)))
            with pytest.raises(TooManyRequests, match=r"at most 0\.2 requests a second per node; retry in"):
                await pull(nc, x, Layout.of(), everything, wait=OFFERS_S)
            # the states subject is limited the same way
            states = [
                await nc.request(
                    f"{Layout.of().prefix}.states",
                    msgpack.packb({"op": "offer", "from": "x", "stream": "CRDTMEM_USERS", "need": 1}),
                    timeout=5,
                )
                for _ in range(8)
            ]
            assert any(b"TooManyRequests" in m.data for m in states)
    finally:
        await bus.stop()
        await a.stop()


async def test_requests_are_bound_to_their_inbox_and_key(tmp_path):
    async with Replica(tmp_path / "c.db", replica_id="c") as c:
        data = sign_request(c, {"op": "offer"}, "_INBOX.mine", on="pull")
        request = open_request(data, "_INBOX.mine", on="pull", max_bytes=MAX_REQUEST_BYTES)
        assert request.requester == "c" and request.key == c.signer.public  # type: ignore[union-attr]
        assert request.body["op"] == "offer"
        with pytest.raises(AccessDenied, match="another inbox"):
            open_request(data, "_INBOX.thief", on="pull", max_bytes=MAX_REQUEST_BYTES)
        with pytest.raises(AccessDenied, match="signed for 'pull', not 'states'"):
            open_request(data, "_INBOX.mine", on="states", max_bytes=MAX_REQUEST_BYTES)
        envelope = msgpack.unpackb(data)
        envelope["sig"] = bytes(64)
        with pytest.raises(AccessDenied, match="does not verify"):
            open_request(msgpack.packb(envelope), "_INBOX.mine", on="pull", max_bytes=MAX_REQUEST_BYTES)
        # a pull request of a build that did not say what it is for is a pull request
        older = sign_request(c, {"op": "offer"}, "_INBOX.mine")
        assert open_request(older, "_INBOX.mine", on="pull", max_bytes=MAX_REQUEST_BYTES).requester == "c"


async def test_a_new_node_pulls_on_start(tmp_path, nats_server):
    a, bus = await _serving(tmp_path, nats_server.url)
    try:
        async with (
            Replica(tmp_path / "c.db", replica_id="c") as c,
            BusClient(c, BusSettings([nats_server.url], pull_on_start=True, pull_wait_s=OFFERS_S)) as bus_c,
        ):
            await eventually(lambda: _pulled(bus_c), what="c pulled once")
            await eventually(lambda: _same(a, c), what="c holds what a holds")
            assert bus.metrics.value("crdtmem_bus_pulled_deltas_total") == 40
            assert bus_c.status()["delivery"] == "eager"
            assert bus.status()["pull_pages_served"] >= 1
    finally:
        await bus.stop()
        await a.stop()


async def _pulled(bus: BusClient) -> bool:
    return bus.metrics.value("crdtmem_bus_pulled_total") == 1


async def _same(a: Replica, c: Replica) -> bool:
    return a.version_vectors([U1, U2]) == c.version_vectors([U1, U2])


async def test_a_long_pull_goes_at_the_serving_nodes_rate(tmp_path, nats_server):
    """More pages than a burst: the puller waits as each refusal says, and gets everything."""
    a, bus = await _serving(tmp_path, nats_server.url, request_rate=10.0, request_burst=2.0)
    try:
        async with Replica(tmp_path / "c.db", replica_id="c") as c, _connected(nats_server.url) as nc:
            pulled = await pull(
                nc, c, Layout.of(), Principal("user:bus", ("*",), ("*",), ("*",)), limit=5, wait=OFFERS_S
            )
            assert pulled.deltas == 40 and pulled.pages == 9
            assert c.version_vectors([U1, U2]) == a.version_vectors([U1, U2])
            assert (
                bus.metrics.value("crdtmem_bus_requests_refused_total", op="page", reason="TooManyRequests")
                > 0
            )
    finally:
        await bus.stop()
        await a.stop()


async def test_serve_bus_pull_fills_a_new_node_from_pages(nats_server, procs, session, tmp_path):
    a = bus_node(tmp_path, "a", [nats_server.url], channels=[U1]).start()
    procs.append(a)
    api_a = Api(session, a.url)
    await ready(api_a)
    await api_a.add(0, kind="counter", user_id="u1", id="c1")
    for _ in range(30):
        await api_a.patch("c1", increment=1)
    c = bus_node(tmp_path, "c", [nats_server.url], "--bus-pull", channels=[U1]).start()
    procs.append(c)
    api_c = Api(session, c.url)
    await eventually(lambda: converged([api_a, api_c]), timeout=60, what="c holds what a holds")
    assert (await api_c.get("c1"))["content"] == 30  # type: ignore[index]
    served = await (await session.get(a.url + "/metrics")).text()
    assert "crdtmem_bus_pulled_deltas_total 31" in served
    pulled = await (await session.get(c.url + "/metrics")).text()
    assert "crdtmem_bus_pulled_total 1" in pulled
