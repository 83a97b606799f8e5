"""Lazy delivery on the bus (``BusSettings(delivery="lazy")``, ``serve --bus-delivery lazy``): the
entries committed in a batch interval go out as one message per channel and origin, with the same
outbox rule as eager delivery: nothing acknowledged is skipped, marks rise only after the PubAck, and
a node killed -9 between its commits and the batch's publish publishes them on its next start."""

from __future__ import annotations

import asyncio
import random
import sqlite3

import nats
import pytest

from crdtmem import Replica
from crdtmem.bus import BusClient, BusSettings
from crdtmem.bus.subjects import batch_id, entries_named
from crdtmem.errors import NotFound
from tests.support.rest import Api, converged, eventually
from tests.test_bus_faults import bus_node, nats_server_killed, ready, write_through_faults

U1 = "user:u1:memories"
LAZY = ("--bus-delivery", "lazy", "--bus-batch-interval")


def test_batch_ids_name_their_entries() -> None:
    msg_id = batch_id("a", U1, [3, 4, 6], b"data")
    assert entries_named(msg_id, U1, b"data") == ("a", [3, 4, 5, 6])
    assert batch_id("a", U1, [3, 4, 6], b"data") == msg_id != batch_id("a", U1, [3, 4, 5, 6], b"data")
    assert batch_id("a", "user:u2:memories", [3, 4, 6], b"data") != msg_id
    assert batch_id("a", U1, [3, 4, 6], b"other") != msg_id
    for bad in ["a:9-3:x", "a:0-3:x", "a:1-20000:x", "a:x-y:z", "a:-3:x"]:
        assert entries_named(bad, U1, b"data") is None


async def _drained(bus: BusClient) -> bool:
    return bool(bus.ready and bus.outbox is not None and bus.outbox.lag() == 0)


async def test_lazy_batches_carry_many_entries_and_converge(tmp_path, nats_server):
    # a batch per interval: the interval is long beside the 80 writes even on a loaded machine
    # (at 0.3 s, writes slowed to 0.1 s each would make a message of every three entries)
    lazy = BusSettings([nats_server.url], delivery="lazy", batch_interval_s=2.0)
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
        BusClient(a, lazy) as bus_a,
        BusClient(b, BusSettings([nats_server.url])) as bus_b,
    ):
        await eventually(lambda: _ready(bus_a, bus_b), what="both on the bus")
        await a.add(0, kind="counter", user_id="u1", memory_id="c")
        fact = await a.add("draft 0", user_id="u1")
        for n in range(1, 40):
            await a.increment("c")
            await a.update(fact.id, content=f"draft {n}")
        await eventually(lambda: _drained(bus_a), what="a's outbox drained")
        await eventually(lambda: _holds(b, fact.id, "draft 39", 39), what="b holds a's writes")
        outbox = bus_a.outbox
        assert outbox is not None
        assert outbox.published >= 80  # every entry, counted once
        assert outbox.messages < outbox.published / 4  # in few messages
        assert b.version_vectors([U1]) == a.version_vectors([U1])
        consumer = bus_b.consumers["CRDTMEM_USERS"]

        async def _all_consumed() -> bool:  # counted after the ack, which follows the visible apply
            return consumer.consumed >= outbox.messages

        await eventually(_all_consumed, what="b acknowledged every message")
        assert consumer.consumed == outbox.messages


async def _ready(*buses: BusClient) -> bool:
    return all(bus.ready for bus in buses)


async def _holds(replica: Replica, fact_id: str, content: str, total: int) -> bool:
    try:
        fact, counter = await replica.get(fact_id), await replica.get("c")
    except NotFound:  # not arrived yet
        return False
    return fact.content == content and counter.content == total


async def test_a_lazy_batch_published_again_applies_nothing_twice(tmp_path, nats_server):
    """The marks lost (a crash before they were written): the node publishes its batches again,
    cut another way (duplicates at the receiver, counted, applied once)."""
    async with Replica(tmp_path / "a.db", replica_id="a") as a:
        await a.add(0, kind="counter", user_id="u1", memory_id="c")
        for _ in range(30):
            await a.increment("c")
        async with BusClient(a, BusSettings([nats_server.url], delivery="lazy", batch_interval_s=0.2)) as bus:
            await eventually(lambda: _drained(bus), what="a's first batches published")
    with sqlite3.connect(tmp_path / "a.db") as db:
        db.execute("DELETE FROM outbox")
    settings = BusSettings([nats_server.url], delivery="lazy", batch_interval_s=0.2, publish_batch=7)
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
        BusClient(a, settings) as again,
        BusClient(b, BusSettings([nats_server.url])) as bus_b,
    ):
        await eventually(lambda: _drained(again), what="a's batches published again")
        await eventually(lambda: _counter(b, 30), what="b counts 30")
        await eventually(lambda: _consumed(bus_b, 2), what="b read the second copies")
        assert (await b.get("c")).content == 30  # type: ignore[union-attr]
        assert b.version_vectors([U1]) == a.version_vectors([U1])


async def _consumed(bus: BusClient, copies: int) -> bool:
    consumer = bus.consumers.get("CRDTMEM_USERS")
    return consumer is not None and consumer.consumed >= copies and consumer.lag == 0


async def _counter(replica: Replica, total: int) -> bool:
    counter = await replica.get("c")
    return counter is not None and counter.content == total


# -- real processes, kill -9 ----------------------------------------------------------------------


async def test_a_node_killed_between_its_commits_and_the_batch_loses_nothing(
    nats_server, procs, session, tmp_path
):
    """Writes acknowledged inside a long batch interval, then kill -9 before the batch goes out:
    the outbox (the log past the durable marks) publishes them when the node is back."""
    a = bus_node(tmp_path, "a", [nats_server.url], *LAZY, "30", channels=[U1]).start()
    b = bus_node(tmp_path, "b", [nats_server.url], channels=[U1]).start()
    procs += [a, b]
    api_a, api_b = Api(session, a.url), Api(session, b.url)
    await ready(api_a)
    await ready(api_b)
    await api_a.add(0, kind="counter", user_id="u1", id="c")
    acked = 0
    for _ in range(25):
        await api_a.patch("c", increment=1)
        acked += 1
    assert (await api_b.get("c")) is None  # the first batch has not gone out
    a.kill()
    a.start()  # the same command: its first session publishes what the log holds at once
    await eventually(lambda: _content(api_b, "c", acked), timeout=60, what="b holds every acknowledged write")
    await eventually(lambda: converged([api_a, api_b]), what="a and b converge")
    assert (await api_b.status())["pending_deltas"] == 0


async def _content(api: Api, memory_id: str, expected: object) -> bool:
    memory = await api.get(memory_id)
    return memory is not None and memory["content"] == expected


async def lazy_kills(server, procs, session, tmp_path, *, rounds: int, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    nodes = {
        name: bus_node(tmp_path, name, [server.url], *LAZY, "0.3", channels=[U1]).start()
        for name in ("a", "b", "c")
    }
    procs += list(nodes.values())
    apis = {name: Api(session, node.url) for name, node in nodes.items()}
    for api in apis.values():
        await ready(api)

    async def faults() -> None:
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(0.2, 0.8))
            victim = rng.choice(list(nodes.values()))
            victim.kill()  # commits acknowledged, a batch waiting or in flight
            await asyncio.sleep(rng.uniform(0, 0.3))
            await asyncio.to_thread(victim.start)

    await write_through_faults(nodes, apis, faults, rounds=rounds, seed=seed)


async def test_lazy_nodes_killed_mid_stream_lose_nothing(nats_server, procs, session, tmp_path):
    await lazy_kills(nats_server, procs, session, tmp_path, rounds=30, kills=2, seed=5)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(3))
async def test_lazy_node_kills_soak(nats_server, procs, session, tmp_path, seed):
    await lazy_kills(nats_server, procs, session, tmp_path, rounds=300, kills=8, seed=seed)


# -- a lazy fleet on a three-server cluster, a NATS server killed -9 -----------------------------


async def lazy_fleet_on_a_cluster(
    cluster, procs, session, tmp_path, *, rounds: int, kills: int, seed: int
) -> None:
    """Three lazy nodes on R3 streams write through NATS servers killed -9 mid-run: the batches
    a server took with it (no PubAck) go out again through another server, and the fleet converges
    with every acknowledged write once."""
    # a batch a second: the batches stay large beside the writes however slow a loaded machine
    # makes them (the check below counts messages against entries)
    lazy = (*LAZY, "1.0")
    apis = await nats_server_killed(
        cluster, procs, session, tmp_path, rounds=rounds, kills=kills, seed=seed, extra=lazy
    )
    published = 0.0
    for api in apis.values():
        status = await api.status()
        assert status["bus"]["delivery"] == "lazy"
        published += status["bus"]["published"]
    nc = await nats.connect(cluster.urls)
    try:
        stream = (await nc.jetstream().stream_info("CRDTMEM_USERS")).state
    finally:
        await nc.close()
    assert published >= 2 * len(apis) * rounds  # an item and an increment per acknowledged round
    assert stream.messages < published / 2, "entries went out in batches"


async def test_a_lazy_fleet_on_a_cluster_loses_nothing_while_a_nats_server_is_killed(
    nats_cluster, procs, session, tmp_path
):
    await lazy_fleet_on_a_cluster(nats_cluster, procs, session, tmp_path, rounds=40, kills=1, seed=6)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(3))
async def test_lazy_fleet_nats_server_kills_soak(nats_cluster, procs, session, tmp_path, seed):
    await lazy_fleet_on_a_cluster(nats_cluster, procs, session, tmp_path, rounds=400, kills=6, seed=seed)
