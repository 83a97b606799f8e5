"""A fleet on NATS JetStream under faults, with real processes: a NATS server of a three-server
cluster killed -9 and restarted while every node writes, a crdtmem node killed -9 mid-stream, the bus
unreachable for a while; and hostile, duplicated and out-of-order messages published straight to the
stream. After each: every node converges, every acknowledged write is present, and no increment is
applied twice (the counter is the acknowledged increments plus some of the unanswered ones, each
at most once).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import pytest

from crdtmem import Replica
from crdtmem.bus import Layout, message_id
from crdtmem.engine import payload as wire
from tests.support.nats import NatsCluster, NatsServer
from tests.support.processes import ServerProcess
from tests.support.rest import Api, converged, eventually
from tests.test_replication_faults import TRANSIENT, Ledger

U1 = "user:u1:memories"


def bus_node(workdir: Path, name: str, urls: list[str], *extra: str, **kwargs: object) -> ServerProcess:
    return ServerProcess(workdir, name, extra=["--bus", ",".join(urls), *extra], **kwargs)  # type: ignore[arg-type]


async def ready(api: Api, timeout: float = 60) -> None:
    async def check() -> bool:
        try:
            async with api.session.get(api.url + "/readyz") as r:
                return r.status == 200
        except TRANSIENT:
            return False

    await eventually(check, timeout=timeout, what=f"{api.url} ready with its bus")


async def exists(api: Api, memory_id: str) -> bool:
    try:
        return await api.get(memory_id) is not None
    except TRANSIENT:
        return False


async def write_through_faults(
    nodes: dict[str, ServerProcess],
    apis: dict[str, Api],
    faults: Callable[[], Awaitable[None]],
    *,
    rounds: int,
    seed: int,
) -> None:
    """Every node writes (list items and counter increments) until it has ``rounds`` acknowledged
    writes and ``faults()`` is over; then the fleet must converge with nothing acknowledged lost and
    nothing applied twice."""
    rng = random.Random(seed)
    first = next(iter(apis.values()))
    items = await first.add([], kind="list", user_id="u1", id="items")
    counter = await first.add(0, kind="counter", user_id="u1", id="counter")
    for api in apis.values():
        await eventually(
            lambda api=api: exists(api, counter["id"]), timeout=30, what="the memories everywhere"
        )

    ledger = Ledger()
    faults_over = asyncio.Event()

    async def writer(name: str) -> None:
        api, acked, attempts = apis[name], 0, 0
        while acked < rounds or not faults_over.is_set():
            attempts += 1
            assert attempts <= 100 * rounds, f"{name}: {acked} of {rounds} writes acknowledged"
            item = f"{name}-{attempts}"
            try:
                await api.patch(items["id"], add_items=[item])
            except TRANSIENT:
                ledger.unanswered_items.add(item)
                await asyncio.sleep(0.1)
                continue
            ledger.acked_items.add(item)
            acked += 1
            amount = rng.randint(1, 5)
            try:
                await api.patch(counter["id"], increment=amount)
            except TRANSIENT:
                ledger.unanswered_amounts.append(amount)
                await asyncio.sleep(0.1)
                continue
            ledger.acked_total += amount
            await asyncio.sleep(rng.uniform(0, 0.02))

    writers = [asyncio.create_task(writer(name)) for name in apis]
    try:
        await faults()
        faults_over.set()
        await asyncio.gather(*writers)
    finally:
        for task in writers:
            task.cancel()
    assert len(ledger.acked_items) >= len(apis) * rounds
    everyone = list(apis.values())
    await eventually(lambda: converged(everyone), timeout=90, what="convergence after the faults")
    for api in everyone:
        ledger.check_items(set((await api.get(items["id"]))["content"]))
        ledger.check_total((await api.get(counter["id"]))["content"])
        status = await api.status()
        assert status["pending_deltas"] == 0
    for api in everyone:
        await eventually(lambda api=api: _drained(api), what="every outbox drained")


async def _drained(api: Api) -> bool:
    return (await api.status())["bus"]["publish_lag"] == 0


# -- a NATS server killed -9 in a three-server cluster -------------------------------------------


async def nats_server_killed(
    cluster: NatsCluster,
    procs,
    session,
    tmp_path,
    *,
    rounds: int,
    kills: int,
    seed: int,
    extra: tuple[str, ...] = (),
) -> dict[str, Api]:
    """Three nodes (started with ``extra`` options) on the cluster's R3 streams write through
    ``kills`` NATS servers killed -9 and started again; returns the nodes' APIs."""
    rng = random.Random(seed)
    nodes = {
        name: bus_node(tmp_path, name, cluster.urls, "--bus-replicas", "3", *extra, channels=[U1]).start()
        for name in ("a", "b", "c")
    }
    procs += list(nodes.values())
    apis = {name: Api(session, node.url) for name, node in nodes.items()}
    for api in apis.values():
        await ready(api)

    async def faults() -> None:
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(0.3, 1.0))
            victim = rng.choice(cluster.servers)
            victim.kill()
            await asyncio.sleep(rng.uniform(0.5, 1.5))
            await asyncio.to_thread(victim.start)

    await write_through_faults(nodes, apis, faults, rounds=rounds, seed=seed)
    return apis


async def test_writes_on_every_node_while_a_nats_server_is_killed(nats_cluster, procs, session, tmp_path):
    await nats_server_killed(nats_cluster, procs, session, tmp_path, rounds=40, kills=1, seed=1)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(3))
async def test_nats_server_kills_soak(nats_cluster, procs, session, tmp_path, seed):
    await nats_server_killed(nats_cluster, procs, session, tmp_path, rounds=400, kills=6, seed=seed)


# -- a crdtmem node killed -9 mid-stream ---------------------------------------------------------


async def node_killed(server: NatsServer, procs, session, tmp_path, *, rounds: int, kills: int, seed: int):
    rng = random.Random(seed)
    nodes = {name: bus_node(tmp_path, name, [server.url], channels=[U1]).start() for name in ("a", "b", "c")}
    procs += list(nodes.values())
    apis = {name: Api(session, node.url) for name, node in nodes.items()}
    for api in apis.values():
        await ready(api)

    async def faults() -> None:
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(0.3, 1.0))
            victim = rng.choice(list(nodes.values()))
            victim.kill()  # mid-stream: publishes, fetched batches and commits are in flight
            await asyncio.sleep(rng.uniform(0, 0.5))
            await asyncio.to_thread(victim.start)

    await write_through_faults(nodes, apis, faults, rounds=rounds, seed=seed)


async def test_a_node_killed_mid_stream_loses_nothing(nats_server, procs, session, tmp_path):
    await node_killed(nats_server, procs, session, tmp_path, rounds=40, kills=2, seed=2)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(3))
async def test_node_kills_soak(nats_server, procs, session, tmp_path, seed):
    await node_killed(nats_server, procs, session, tmp_path, rounds=400, kills=8, seed=seed)


# -- the bus unreachable for a while -------------------------------------------------------------


async def bus_away(server: NatsServer, procs, session, tmp_path, *, rounds: int, away: float, seed: int):
    nodes = {name: bus_node(tmp_path, name, [server.url], channels=[U1]).start() for name in ("a", "b")}
    procs += list(nodes.values())
    apis = {name: Api(session, node.url) for name, node in nodes.items()}
    for api in apis.values():
        await ready(api)
    lag_seen: list[int] = []

    async def faults() -> None:
        await asyncio.sleep(0.5)
        server.kill()
        await asyncio.sleep(away)  # writes go on, acknowledged once durable on their node
        lag_seen.append((await apis["a"].status())["bus"]["publish_lag"])
        await asyncio.to_thread(server.start)

    await write_through_faults(nodes, apis, faults, rounds=rounds, seed=seed)
    assert lag_seen[0] > 0, "writes while the bus was away wait in the outbox"


async def test_writes_go_on_while_the_bus_is_unreachable(nats_server, procs, session, tmp_path):
    await bus_away(nats_server, procs, session, tmp_path, rounds=40, away=2.0, seed=3)


@pytest.mark.soak
async def test_bus_away_soak(nats_server, procs, session, tmp_path):
    await bus_away(nats_server, procs, session, tmp_path, rounds=400, away=20.0, seed=4)


# -- devices on the edge -------------------------------------------------------------------------


async def test_a_device_syncs_with_one_node_and_reaches_the_fleet(nats_server, procs, session, tmp_path):
    a = bus_node(tmp_path, "a", [nats_server.url], channels=[U1]).start()
    b = bus_node(tmp_path, "b", [nats_server.url], channels=[U1]).start()
    procs += [a, b]
    phone = ServerProcess(tmp_path, "phone", channels=[U1], peers=[a.url]).start()
    procs.append(phone)
    api_a, api_b, api_phone = (Api(session, p.url) for p in (a, b, phone))
    await ready(api_a)
    await ready(api_b)
    await api_phone.add("written on the phone", user_id="u1", id="p1")
    await eventually(lambda: exists(api_b, "p1"), what="phone -> a -> bus -> b")
    await api_b.add("written on b", user_id="u1", id="b1")
    await eventually(lambda: exists(api_phone, "b1"), what="b -> bus -> a -> phone")
    await eventually(lambda: converged([api_a, api_b, api_phone]), what="phone, a and b converge")


# -- hostile, duplicated and out-of-order messages ------------------------------------------------


async def publish_deltas(server: NatsServer, deltas: list[tuple[str, bytes, str]]) -> None:
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        for subject, data, msg_id in deltas:
            await js.publish(subject, data, headers={"Nats-Msg-Id": msg_id})
    finally:
        await nc.close()


async def test_duplicates_out_of_order_and_hostile_messages(nats_server, procs, session, tmp_path):
    node = bus_node(tmp_path, "n", [nats_server.url]).start()
    procs.append(node)
    api = Api(session, node.url)
    await ready(api)
    layout = Layout.of()
    subject = layout.subject(U1)
    async with Replica(None, replica_id="dev") as dev:
        await dev.add(0, kind="counter", user_id="u1", memory_id="c")
        for amount in range(1, 6):
            await dev.increment("c", amount)
        exported = wire.decode(await dev.export_since([U1]))
    assert len(exported.deltas) == 6
    one = [wire.encode(wire.Payload("dev", [d], {}, exported.keys)) for d in exported.deltas]
    ordered = [(subject, data, f"dev-{i}") for i, data in enumerate(one)]
    messages = [
        (subject, b"\x93garbage", "garbage"),  # not a payload
        (layout.subject("user:u2:memories"), one[0], "wrong-subject"),  # a delta off its channel
        *reversed(ordered),  # every delta before the ones it depends on
        *[(s, d, f"again-{i}") for s, d, i in ordered[1:4]],  # copies past deduplication
    ]
    await publish_deltas(nats_server, messages)
    await eventually(lambda: _content(api, "c", 15), what="the counter, each increment once")
    # the copies follow the originals in the stream and may come in a later batch than the one
    # that completed the counter: wait until the node took every message it acknowledges
    await eventually(lambda: _consumed(api, len(ordered) + 3), what="the copies consumed")
    assert await _content(api, "c", 15), "a copy was applied again"
    metrics = await (await session.get(node.url + "/metrics")).text()
    assert _sample(metrics, "crdtmem_bus_duplicates_total") >= 3
    assert _sample(metrics, 'crdtmem_bus_messages_refused_total{reason="MalformedPayload"}') == 1
    assert _sample(metrics, 'crdtmem_bus_messages_refused_total{reason="InvalidInput"}') == 1
    status = await api.status()
    assert status["pending_deltas"] == 0
    assert status["bus"]["ready"] is True  # the stream flowed on past the hostile messages


async def test_the_bus_principal_introduces_only_its_origins(nats_server, procs, session, tmp_path):
    app = "app-token-000000000000001"
    tokens = tmp_path / "tokens.json"
    entries = [
        {"token": app, "principal": "user:app", "read": ["*"], "write": ["*"]},
        {
            "token": "bus-token-00000000000001",
            "principal": "user:bus",
            "read": ["*"],
            "write": [U1],
            "origins": ["good"],
        },
    ]
    tokens.write_text(json.dumps({"tokens": entries}))
    node = bus_node(tmp_path, "n", [nats_server.url], tokens=tokens).start()
    procs.append(node)
    api = Api(session, node.url, token=app)
    await ready(api)
    layout = Layout.of()
    published = []
    writes = {"good": [(U1, "u1"), ("user:u2:memories", "u2")], "evil": [(U1, "u1")]}
    for origin, targets in writes.items():
        async with Replica(None, replica_id=origin) as writer:
            for channel, user in targets:
                await writer.add(f"from {origin}", user_id=user, memory_id=f"{origin}-{user}")
                exported = wire.decode(await writer.export_since([channel]))
                (delta,) = exported.deltas
                data = wire.encode(wire.Payload(origin, [delta], {}, exported.keys))
                msg_id = message_id(origin, channel, delta.seqs[channel], data)
                published.append((layout.subject(channel), data, msg_id))
    await publish_deltas(nats_server, published)
    await eventually(lambda: exists(api, "good-u1"), what="the allowed origin's delta")
    await eventually(lambda: _refused(api), what="the other two refused")
    assert await api.get("evil-u1") is None  # an origin the bus may not introduce
    assert await api.get("good-u2") is None  # a channel the bus may not write


async def _refused(api: Api) -> bool:
    refused = (await api.status())["trust"]["refused"]
    return refused.get("unauthenticated", 0) >= 1 and refused.get("denied", 0) >= 1


async def _consumed(api: Api, count: int) -> bool:
    """Whether the node acknowledged ``count`` messages of the users' stream (refused ones aside)."""
    consumers = (await api.status())["bus"]["consumers"]
    return bool(consumers.get("CRDTMEM_USERS", {}).get("consumed", 0) >= count)


async def _content(api: Api, memory_id: str, expected: object) -> bool:
    found = await api.get(memory_id)
    return found is not None and found["content"] == expected


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return 0.0
