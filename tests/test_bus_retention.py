"""Streams that drop entries: a node further behind than its stream holds, or new while the stream no
longer begins at its start, catches up from document states served by another node over the bus
(crdtmem.bus.states), and is not ready while no node can serve them. Real NATS and node processes."""

from __future__ import annotations

from pathlib import Path

import msgpack
import nats
import nats.js.errors
import pytest
from nats.js import api as jsapi

from crdtmem import Replica
from crdtmem.bus.fold import fold_stream
from crdtmem.bus.requests import sign_request
from tests.support.processes import ServerProcess
from tests.support.rest import Api, converged, eventually

U1 = "user:u1:memories"


def bus_node(workdir: Path, name: str, url: str, *extra: str, **kwargs: object) -> ServerProcess:
    return ServerProcess(workdir, name, extra=["--bus", url, *extra], **kwargs)  # type: ignore[arg-type]


async def small_stream(url: str, max_msgs: int) -> None:
    """The users' stream, made by the operator with a small limit (the nodes take it as it is)."""
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(
            jsapi.StreamConfig(
                name="CRDTMEM_USERS",
                subjects=["crdtmem.users.>"],
                storage=jsapi.StorageType.FILE,
                max_msgs=max_msgs,
                duplicate_window=120.0,
            )
        )
    finally:
        await nc.close()


async def first_seq(url: str) -> int:
    nc = await nats.connect(url)
    try:
        return int((await nc.jetstream().stream_info("CRDTMEM_USERS")).state.first_seq)
    finally:
        await nc.close()


async def readiness(api: Api) -> tuple[int, dict]:
    async with api.session.get(api.url + "/readyz") as r:
        return r.status, await r.json()


async def is_ready(api: Api) -> bool:
    return (await readiness(api))[0] == 200


async def write(api: Api, count: int, prefix: str) -> set[str]:
    """``count`` acknowledged writes (new facts and counter increments); returns the facts' ids."""
    ids = set()
    for i in range(count):
        made = await api.add(f"{prefix} {i}", user_id="u1", id=f"{prefix}-{i}")
        ids.add(made["id"])
        await api.patch("c1", increment=1)
    return ids


async def has_all(api: Api, ids: set[str], total: int) -> bool:
    memories = {m["id"]: m for m in await api.memories()}
    return ids <= set(memories) and memories.get("c1", {}).get("content") == total


async def test_a_node_down_longer_than_the_stream_keeps_catches_up_from_states(
    procs, session, tmp_path, nats_server
):
    await small_stream(nats_server.url, max_msgs=12)
    a = bus_node(tmp_path, "a", nats_server.url).start()
    b = bus_node(tmp_path, "b", nats_server.url).start()
    procs += [a, b]
    api_a, api_b = Api(session, a.url), Api(session, b.url)
    await eventually(lambda: is_ready(api_a), what="a ready")
    await eventually(lambda: is_ready(api_b), what="b ready")
    await api_a.add(0, kind="counter", user_id="u1", id="c1")
    before = await write(api_a, 3, "before")
    await eventually(lambda: has_all(api_b, before, 3), what="b has the first writes")

    b.stop()
    during = await write(api_a, 20, "during")  # 40 entries: the stream keeps the last 12
    assert await first_seq(nats_server.url) > 20
    b.start()
    await eventually(lambda: has_all(api_b, before | during, 23), timeout=60, what="b caught up")
    await eventually(lambda: is_ready(api_b), what="b ready after its catch-up")
    await eventually(lambda: converged([api_a, api_b]), what="a and b converge")
    metrics = await (await session.get(b.url + "/metrics")).text()
    assert "crdtmem_bus_states_fetched_total 1" in metrics
    assert "catching up from document states" in b.log.read_text()
    assert (await api_a.status())["bus"]["states_served"] >= 1

    # the restart forgot nothing: b's own writes and a's later ones flow both ways
    after = await write(api_b, 2, "after")
    await eventually(lambda: has_all(api_a, before | during | after, 25), what="b's writes on a")


async def test_a_new_node_waits_not_ready_until_a_node_can_serve_states(
    procs, session, tmp_path, nats_server
):
    await small_stream(nats_server.url, max_msgs=10)
    a = bus_node(tmp_path, "a", nats_server.url).start()
    procs.append(a)
    api_a = Api(session, a.url)
    await eventually(lambda: is_ready(api_a), what="a ready")
    await api_a.add(0, kind="counter", user_id="u1", id="c1")
    early = await write(api_a, 15, "early")
    assert await first_seq(nats_server.url) > 1
    a.stop()

    # nobody holds what the stream dropped: the new node says so and does not pretend
    c = bus_node(tmp_path, "c", nats_server.url).start()
    procs.append(c)
    api_c = Api(session, c.url)

    async def says_why() -> bool:
        status, body = await readiness(api_c)
        behind = (body.get("bus") or {}).get("behind") or ""
        return status == 503 and "no node could serve" in behind

    await eventually(says_why, what="c not ready, saying why")
    _, body = await readiness(api_c)
    assert "CRDTMEM_USERS" in body["bus"]["behind"], body
    assert body["bus"]["ready"] is True  # connected and consuming: only the states are missing

    a.start()
    await eventually(lambda: has_all(api_c, early, 15), timeout=60, what="c filled from a")
    await eventually(lambda: is_ready(api_c), what="c ready")
    await eventually(lambda: converged([api_a, api_c]), what="a and c converge")


async def test_states_requests_are_untrusted(procs, session, tmp_path, nats_server):
    """Malformed requests, unknown streams and channels the bus principal may not read get a clear
    refusal; a page names exactly the channels of the node."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        '{"tokens": [{"token": "' + "b" * 24 + '", "principal": "user:bus", "read": ["user:u1:memories"],'
        ' "write": ["*"], "origins": ["*"]},'
        ' {"token": "' + "m" * 24 + '", "principal": "user:ops", "read": ["*"]}]}'
    )
    a = bus_node(tmp_path, "a", nats_server.url, tokens=tokens).start()
    procs.append(a)
    api_a = Api(session, a.url, token="b" * 24)
    await eventually(lambda: is_ready(api_a), what="a ready")
    nc = await nats.connect(nats_server.url)
    x = await Replica(tmp_path / "x.db", replica_id="x").start()  # another node's key signs the requests
    try:

        async def ask(body: object, *, raw: bytes | None = None) -> dict:
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox, max_msgs=1)
            data = raw if raw is not None else sign_request(x, body, inbox, on="states")  # type: ignore[arg-type]
            await nc.publish("crdtmem.states.a", data, reply=inbox)
            return msgpack.unpackb((await sub.next_msg(timeout=5)).data, raw=False)

        assert "MalformedPayload" in (await ask(None, raw=b"\xc1not msgpack"))["error"]
        assert "InvalidInput" in (await ask(None, raw=b"\x00" * 70_000))["error"]
        unsigned = msgpack.packb({"op": "offer", "from": "x", "stream": "CRDTMEM_USERS", "need": 1})
        refused = await ask(None, raw=unsigned)  # the bus principal vouches for no node unsigned
        assert "AccessDenied: an unsigned states request naming node 'x'" in refused["error"]
        refused = await ask({"op": "page", "stream": "NOPE", "channels": [U1]})
        assert "no stream" in refused["error"]
        refused = await ask({"op": "page", "stream": "CRDTMEM_USERS", "channels": ["user:u2:memories"]})
        assert "does not serve" in refused["error"]
        refused = await ask({"op": "page", "stream": "CRDTMEM_USERS", "channels": [U1], "covers": [1]})
        assert "MalformedPayload" in refused["error"]
        offer = await ask({"op": "offer", "stream": "CRDTMEM_USERS", "channels": None, "need": 1})
        assert offer["replica"] == "a" and isinstance(offer["floor"], int)
        assert offer["channels"] == []  # nothing written yet; and never a channel it may not read
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, max_msgs=1)
        request = {"op": "page", "stream": "CRDTMEM_USERS", "channels": [U1]}
        await nc.publish("crdtmem.states.a", sign_request(x, request, inbox, on="states"), reply=inbox)
        page = await sub.next_msg(timeout=5)
        assert b"crdtmem.states" in page.data[:48]
        ops = Api(session, a.url, token="m" * 24)
        metrics = await (await session.get(a.url + "/metrics", headers=ops.headers)).text()
        assert 'crdtmem_bus_requests_refused_total{op="offer",reason="AccessDenied"} 1.0' in metrics
    finally:
        await x.stop()
        await nc.close()


@pytest.mark.soak
async def test_restarts_behind_a_tiny_stream_soak(procs, session, tmp_path, nats_server):
    await small_stream(nats_server.url, max_msgs=5)
    nodes = [bus_node(tmp_path, n, nats_server.url).start() for n in ("a", "b", "c")]
    procs += nodes
    apis = [Api(session, n.url) for n in nodes]
    for api in apis:
        await eventually(lambda api=api: is_ready(api), what="ready")
    await apis[0].add(0, kind="counter", user_id="u1", id="c1")
    written: set[str] = set()
    total = 0
    for round_ in range(6):
        down = nodes[round_ % 3]
        down.stop()
        up = apis[(round_ + 1) % 3]
        written |= await write(up, 15, f"r{round_}")
        total += 15
        down.start()
    for api in apis:
        await eventually(lambda api=api: has_all(api, written, total), timeout=120, what="caught up")
        await eventually(lambda api=api: is_ready(api), timeout=60, what="ready")
    await eventually(lambda: converged(apis), timeout=60, what="converged")


# -- streams folded behind every node (crdtmem.bus.fold) -------------------------------------------


async def stream_state(url: str, stream: str = "CRDTMEM_USERS") -> tuple[int, int, list[str]]:
    """(messages, first sequence, consumer names) of a stream."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(stream)).state
        names = [c.name for c in await js.consumers_info(stream)]
        return int(state.messages), int(state.first_seq), names
    finally:
        await nc.close()


async def raw_messages(url: str, stream: str = "CRDTMEM_USERS") -> list[bytes]:
    """Every message the stream holds, as stored (read by sequence)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        state = (await js.stream_info(stream)).state
        out = []
        for seq in range(int(state.first_seq), int(state.last_seq) + 1):
            try:
                out.append((await js.get_msg(stream, seq)).data or b"")
            except nats.js.errors.NotFoundError:
                continue  # deleted
        return out
    finally:
        await nc.close()


async def test_streams_fold_behind_every_node_and_a_new_node_catches_up(
    procs, session, tmp_path, nats_server
):
    a = bus_node(tmp_path, "a", nats_server.url, "--compact-every", "0.3").start()
    b = bus_node(tmp_path, "b", nats_server.url, "--compact-every", "0.3").start()
    procs += [a, b]
    api_a, api_b = Api(session, a.url), Api(session, b.url)
    await eventually(lambda: is_ready(api_a), what="a ready")
    await eventually(lambda: is_ready(api_b), what="b ready")
    await api_a.add(0, kind="counter", user_id="u1", id="c1")
    first = await write(api_a, 10, "first") | await write(api_b, 5, "from-b")
    await eventually(lambda: has_all(api_b, first, 15), what="b has every write")
    await eventually(lambda: has_all(api_a, first, 15), what="a has every write")

    async def folded() -> bool:
        messages, first_seq, _ = await stream_state(nats_server.url)
        return messages == 0 and first_seq > 30

    await eventually(folded, what="the stream folded behind both nodes")
    metrics = await (await session.get(a.url + "/metrics")).text()
    assert "crdtmem_bus_folded_messages_total" in metrics

    # a new node finds a stream that no longer begins at 1: it catches up from a's or b's states
    c = bus_node(tmp_path, "c", nats_server.url).start()
    procs.append(c)
    api_c = Api(session, c.url)
    await eventually(lambda: has_all(api_c, first, 15), timeout=60, what="c filled from states")
    await eventually(lambda: is_ready(api_c), what="c ready")
    later = await write(api_c, 3, "from-c")
    for api in (api_a, api_b, api_c):
        await eventually(lambda api=api: has_all(api, first | later, 18), what="c's writes everywhere")
    await eventually(lambda: converged([api_a, api_b, api_c]), what="a, b and c converge")


async def test_a_node_away_past_its_lease_stops_holding_the_stream(procs, session, tmp_path, nats_server):
    lease = ["--compact-every", "0.3", "--lease-hours", "0.0005"]  # 1.8 s
    a = bus_node(tmp_path, "a", nats_server.url, *lease).start()
    b = bus_node(tmp_path, "b", nats_server.url, *lease).start()
    procs += [a, b]
    api_a, api_b = Api(session, a.url), Api(session, b.url)
    await eventually(lambda: is_ready(api_a), what="a ready")
    await eventually(lambda: is_ready(api_b), what="b ready")
    await api_a.add(0, kind="counter", user_id="u1", id="c1")
    before = await write(api_a, 3, "before")
    await eventually(lambda: has_all(api_b, before, 3), what="b has the first writes")

    b.stop()
    during = await write(api_a, 10, "during")

    async def b_dropped() -> bool:
        messages, _, names = await stream_state(nats_server.url)
        return messages == 0 and names == ["crdtmem-a"]

    await eventually(b_dropped, what="b's consumer dropped past its lease, the stream folded")
    assert "idle for longer than the lease" in a.log.read_text()
    b.start()
    await eventually(lambda: has_all(api_b, before | during, 13), timeout=60, what="b caught up from states")
    await eventually(lambda: is_ready(api_b), what="b ready")
    await eventually(lambda: converged([api_a, api_b]), what="a and b converge")


async def test_a_fold_racing_new_messages_counts_only_what_it_purged(nats_server):
    """Messages published between the fold's first look at the stream and its purge stay, and are
    not taken off the count of what it purged (which went below zero, and a node's compaction
    loop died on the negative count)."""
    await small_stream(nats_server.url, max_msgs=100)
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.publish("crdtmem.users.u1", b"held by every consumer")
        await js.add_consumer(
            "CRDTMEM_USERS",
            jsapi.ConsumerConfig(durable_name="archiver", deliver_policy=jsapi.DeliverPolicy.NEW),
        )

        class Racing:
            """The bus, where two writes land just before the purge."""

            def __getattr__(self, name: str) -> object:
                return getattr(js, name)

            async def purge_stream(self, stream: str, seq: int) -> bool:
                for n in range(2):
                    await js.publish("crdtmem.users.u1", f"published during the fold {n}".encode())
                return await js.purge_stream(stream, seq=seq)

        folded = await fold_stream(Racing(), "CRDTMEM_USERS", lease_s=60.0)
        state = (await js.stream_info("CRDTMEM_USERS")).state
        assert (folded.purged, folded.first_seq) == (1, 2)
        assert (state.messages, state.first_seq, state.last_seq) == (2, 2, 3)
    finally:
        await nc.close()


# -- a forgotten memory leaves the stream (crdtmem.bus.erase) ---------------------------------------


async def test_a_forgotten_memorys_content_leaves_the_stream(procs, session, tmp_path, nats_server):
    a = bus_node(tmp_path, "a", nats_server.url).start()
    b = bus_node(tmp_path, "b", nats_server.url).start()
    procs += [a, b]
    api_a, api_b = Api(session, a.url), Api(session, b.url)
    await eventually(lambda: is_ready(api_a), what="a ready")
    await eventually(lambda: is_ready(api_b), what="b ready")
    await api_a.add("the door code is mauve-4242", user_id="u1", id="secret")
    await api_a.patch("secret", content="the door code is still mauve-4242, and taupe-1717")
    await api_b.add("an ordinary memory", user_id="u1", id="plain")
    await eventually(lambda: has(api_b, "secret"), what="b has the secret")
    await eventually(lambda: has(api_a, "plain"), what="a has b's memory")
    raw = b"".join(await raw_messages(nats_server.url))
    assert b"mauve-4242" in raw and b"taupe-1717" in raw and b"an ordinary memory" in raw

    await api_a.call("DELETE", "/v1/memories/secret?purge=true", expect=200)

    async def gone() -> bool:
        raw = b"".join(await raw_messages(nats_server.url))
        return b"mauve-4242" not in raw and b"taupe-1717" not in raw

    await eventually(gone, what="the forgotten content out of the stream")
    raw = b"".join(await raw_messages(nats_server.url))
    assert b"an ordinary memory" in raw  # only the forgotten memory's messages went
    await eventually(lambda: _missing(api_b, "secret"), what="b forgot it too")

    # a node that reads the stream afterwards gets the marker and stubs: no content, no hole
    c = bus_node(tmp_path, "c", nats_server.url).start()
    procs.append(c)
    api_c = Api(session, c.url)
    await eventually(lambda: has(api_c, "plain"), what="c read the stream")
    await eventually(lambda: converged([api_a, api_b, api_c]), what="a, b and c converge")
    assert await api_c.get("secret") is None

    async def same_vectors() -> bool:
        vectors = [(await api.status())["version_vectors"] for api in (api_a, api_c)]
        return vectors[0] == vectors[1]

    await eventually(same_vectors, what="c's version vectors equal a's (the stubs filled every entry)")


async def has(api: Api, memory_id: str) -> bool:
    return await api.get(memory_id) is not None


async def _missing(api: Api, memory_id: str) -> bool:
    return await api.get(memory_id) is None


async def test_the_log_keeps_what_the_bus_has_not_published(tmp_path, nats_server):
    """Compaction must not fold a log entry the outbox has not handed to the bus: past the horizon
    the outbox would take it for an entry decided against and never publish it."""
    from crdtmem import Replica
    from crdtmem.bus import BusClient, BusSettings

    nats_server.kill()
    settings = BusSettings([nats_server.url], retry_cap=0.5)
    async with Replica(tmp_path / "a.db", replica_id="a") as replica, BusClient(replica, settings) as bus:
        await replica.add("written while the bus is away", user_id="u1", memory_id="m1")
        assert (await replica.compact()).folded == {}
        nats_server.start()

        async def published() -> bool:
            return bool(bus.ready and bus.outbox is not None and bus.outbox.lag() == 0)

        await eventually(published, what="the entry published")
        assert bus.outbox is not None and bus.outbox.published == 1
        assert (await replica.compact()).folded == {U1: {"a": 1}}
