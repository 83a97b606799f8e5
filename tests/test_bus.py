"""The NATS JetStream bus: subjects, and `crdtmem serve --bus` nodes replicating through a real
JetStream server (tests/support/nats.py starts it)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtmem.bus import Layout, StreamSpec, channel_of, message_id
from crdtmem.bus.subjects import entries_named
from crdtmem.errors import InvalidInput
from crdtmem.ids import Channel
from tests.support.processes import ServerProcess
from tests.support.rest import Api, converged, eventually

U1 = "user:u1:memories"

app_ids = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\u2028\u2029"),
    min_size=1,
    max_size=40,
)


# -- subjects ------------------------------------------------------------------------------------


@given(app_ids, st.sampled_from(["user", "tenant", "topic"]))
def test_every_channel_has_one_subject_and_back(name: str, kind: str) -> None:
    channel = str(getattr(Channel, kind)(name))
    layout = Layout.of()
    subject = layout.subject(channel)
    tokens = subject.split(".")
    assert len(tokens) == 4 and all(tokens), subject
    assert not any(c.isspace() or c in "*>" for c in subject), subject
    assert subject.isascii()
    assert channel_of(subject) == channel


def test_subjects_as_documented() -> None:
    layout = Layout.of()
    assert layout.subject("user:alice@example.com:memories") == "crdtmem.users.user.alice@example%2Ecom"
    assert layout.subject(str(Channel.topic("q3 plans"))) == "crdtmem.topics.topic.q3%20plans"
    assert layout.subject("tenant:acme:shared") == "crdtmem.tenants.tenant.acme"
    assert layout.subject("system:global") == "crdtmem.system.system.global"
    assert layout.subject(str(Channel.user("org:a.b>*"))) == "crdtmem.users.user.org%3Aa%2Eb%3E%2A"


def test_a_tenant_gets_a_stream_of_its_own() -> None:
    acme = StreamSpec("CRDTMEM_ACME", "acme", ("tenant:acme:*",), replicas=3, max_age_s=86400)
    layout = Layout.of([acme])
    assert layout.stream_of("tenant:acme:shared") is acme
    assert layout.subject("tenant:acme:shared") == "crdtmem.acme.tenant.acme"
    assert layout.stream_of("tenant:other:shared").name == "CRDTMEM_TENANTS"
    assert layout.filters(["tenant:acme:shared", U1]) == {
        "CRDTMEM_ACME": ["crdtmem.acme.tenant.acme"],
        "CRDTMEM_USERS": ["crdtmem.users.user.u1"],
    }
    assert layout.filters(None)["CRDTMEM_ACME"] == ["crdtmem.acme.>"]
    with pytest.raises(InvalidInput, match="twice"):
        Layout.of([StreamSpec("CRDTMEM_USERS", "x", ("user:u1:memories",))])


def test_subjects_that_are_not_channels_are_refused() -> None:
    for subject in [
        "crdtmem.users.user",
        "other.users.user.u1",
        "crdtmem.users.bogus.u1",
        "crdtmem.users.user.a%2",
        "crdtmem.users.user.a.b",
        "crdtmem.users.user.%41",  # 'A' escaped: not the canonical subject of user A
    ]:
        with pytest.raises(InvalidInput):
            channel_of(subject)


def test_message_ids_tell_entries_apart() -> None:
    ids = {
        message_id(o, c, s, d)
        for o in ("a", "b")
        for c in (U1, "user:u2:memories")
        for s in (1, 2)
        for d in (b"one", b"two")
    }
    assert len(ids) == 16
    assert all(i.isascii() and "\n" not in i for i in ids)
    assert message_id("a", U1, 1, b"one") == message_id("a", U1, 1, b"one")
    assert entries_named(message_id("a", U1, 1, b"one"), U1, b"one") == ("a", [1])
    assert entries_named(message_id("a", U1, 1, b"one"), U1, b"two") is None


# -- nodes through one JetStream server ----------------------------------------------------------


def bus_node(workdir: Path, name: str, urls: list[str], *extra: str, **kwargs: object) -> ServerProcess:
    return ServerProcess(workdir, name, extra=["--bus", ",".join(urls), *extra], **kwargs)  # type: ignore[arg-type]


async def ready(api: Api) -> None:
    async def check() -> bool:
        async with api.session.get(api.url + "/readyz") as r:
            return r.status == 200

    await eventually(check, what=f"{api.url} ready with its bus")


async def has(api: Api, memory_id: str, content: object = None) -> bool:
    found = await api.get(memory_id)
    return found is not None and (content is None or found["content"] == content)


async def test_writes_on_either_node_reach_the_other_and_a_new_node_catches_up(
    procs, session, tmp_path, nats_server
):
    a = bus_node(tmp_path, "a", [nats_server.url]).start()
    b = bus_node(tmp_path, "b", [nats_server.url]).start()
    procs += [a, b]
    api_a, api_b = Api(session, a.url), Api(session, b.url)
    await ready(api_a)
    await ready(api_b)

    fact = await api_a.add("from a", user_id="u1", id="f1")
    await eventually(lambda: has(api_b, fact["id"], "from a"), what="a's write on b")
    counter = await api_b.add(0, kind="counter", user_id="u1", id="c1")
    await eventually(lambda: has(api_a, counter["id"]), what="b's write on a")
    for _ in range(5):
        await api_a.patch("c1", increment=1)
        await api_b.patch("c1", increment=2)
    await eventually(lambda: has(api_a, "c1", 15), what="counter on a")
    await eventually(lambda: has(api_b, "c1", 15), what="counter on b")
    await eventually(lambda: converged([api_a, api_b]), what="a and b converge")

    # b stops; a writes; b comes back and catches up from its durable consumer
    b.stop()
    await api_a.patch("f1", content="while b was away")
    await api_a.add("new while b was away", user_id="u1", id="f2")
    b.start()
    await eventually(lambda: has(api_b, "f2"), what="b catches up after its restart")
    await eventually(lambda: has(api_b, "f1", "while b was away"), what="b has the update")

    # a brand-new node reads the stream from its start
    c = bus_node(tmp_path, "c", [nats_server.url]).start()
    procs.append(c)
    api_c = Api(session, c.url)
    await eventually(lambda: converged([api_a, api_b, api_c]), what="a new node catches up")
    assert (await api_c.get("c1"))["content"] == 15

    async def settled() -> bool:  # a session a loaded machine timed out reconnects: ready again
        bus = (await api_a.status())["bus"]
        return bool(bus["ready"] is True and bus["publish_lag"] == 0)

    await eventually(settled, what="a's bus ready with nothing left to publish")
    metrics = await (await session.get(a.url + "/metrics")).text()
    assert "crdtmem_bus_published_total" in metrics
    assert "crdtmem_bus_consumer_lag_messages" in metrics


async def test_local_writes_are_acknowledged_without_the_bus_and_published_when_it_comes(
    procs, session, tmp_path, nats_server
):
    nats_server.kill()
    a = bus_node(tmp_path, "a", [nats_server.url]).start()
    procs.append(a)
    api_a = Api(session, a.url)
    async with session.get(a.url + "/readyz") as r:
        assert r.status == 503
        body = await r.json()
        assert body["bus"]["connected"] is False
    async with session.get(a.url + "/healthz") as r:
        assert r.status == 200
    for i in range(10):
        await api_a.add(f"offline {i}", user_id="u1", id=f"o{i}")
    assert (await api_a.status())["bus"]["publish_lag"] == 10

    nats_server.start()
    b = bus_node(tmp_path, "b", [nats_server.url]).start()
    procs.append(b)
    api_b = Api(session, b.url)
    await ready(api_a)
    await eventually(lambda: converged([api_a, api_b]), what="b gets what a wrote while the bus was down")
    assert len(await api_b.memories()) == 10
    await eventually(lambda: _lag(api_a, 0), what="a's outbox drained")


async def _lag(api: Api, expected: int) -> bool:
    return (await api.status())["bus"]["publish_lag"] == expected


async def test_the_bus_principal_needs_an_entry_in_the_tokens_file(procs, tmp_path, nats_server):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [{"token": "t" * 24, "principal": "user:app", "read": ["*"]}]}))
    node = bus_node(tmp_path, "a", [nats_server.url], tokens=tokens)
    with pytest.raises(RuntimeError, match="user:bus"):
        node.start()


# -- the outbox marks ------------------------------------------------------------------------------


async def test_the_outbox_mark_passes_entries_logged_without_a_delta(tmp_path, nats_server):
    """A delta decided against is logged without its delta: nothing to publish, and the mark must
    not stop in front of it; the entries around it are published, and a restart publishes nothing
    twice."""
    from crdtmem import Replica
    from crdtmem.access import Principal
    from crdtmem.bus import BusClient, BusSettings
    from crdtmem.engine import payload as wire

    async with Replica(None, replica_id="w") as writer:
        await writer.add("first", user_id="u1", memory_id="a")
        await writer.add("on two channels", user_id="u1", tenant_id="t", shared=True, memory_id="b")
        await writer.add("third", user_id="u1", memory_id="c")
        exported = wire.decode(await writer.export_since([U1, "tenant:t:shared"]))
    relay = Principal("user:relay", ("*",), (U1,), ("*",), ("*",))
    async with Replica(tmp_path / "r.db", replica_id="r") as replica:
        result = await replica.apply_payload(exported, sender=relay, isolate=True)
        assert (result.applied, result.denied) == (2, 1)
        assert replica.version_vector(U1) == {"w": 3}  # seq 2 logged, decided against
        async with BusClient(replica, BusSettings([nats_server.url])) as bus:
            await eventually(lambda: _settled(bus), what="the outbox drained")
            assert bus.outbox is not None and bus.outbox.published == 2
        assert replica.store.outbox_marks("nats")[U1] == {"w": 3}
        async with BusClient(replica, BusSettings([nats_server.url])) as again:
            await eventually(lambda: _ready(again), what="connected again")
            assert again.outbox is not None
            await again.outbox.publish_pending(_refuse_to_publish)  # nothing is left to publish
            assert again.outbox.lag() == 0


async def _settled(bus) -> bool:
    return bool(bus.ready and bus.outbox.lag() == 0)


async def _ready(bus) -> bool:
    return bool(bus.ready)


async def _refuse_to_publish(subject: str, data: bytes, msg_id: str, stream: str) -> bool:
    raise AssertionError(f"published {msg_id} again")


async def test_a_write_made_while_the_bus_is_down_is_published_by_the_next_session(
    procs, session, tmp_path, nats_server
):
    """No later write wakes the publisher: the session that follows the outage publishes it."""
    a = bus_node(tmp_path, "a", [nats_server.url]).start()
    b = bus_node(tmp_path, "b", [nats_server.url]).start()
    procs += [a, b]
    api_a, api_b = Api(session, a.url), Api(session, b.url)
    await ready(api_a)
    await ready(api_b)
    nats_server.kill()
    await api_a.add("while the bus was down", user_id="u1", id="lonely")
    await asyncio.sleep(3)  # publish attempts fail, sessions end
    nats_server.start()
    await eventually(lambda: has(api_b, "lonely"), timeout=60, what="published after the outage")


async def test_entries_from_the_bus_raise_the_marks_without_reading_the_log(tmp_path, nats_server):
    """A node that only applies what came from the bus has nothing to publish: its outbox marks
    follow without reading its log back, are written at most once a mark interval, not once per
    commit, and are all written when the bus client stops."""
    from crdtmem import Replica
    from crdtmem.bus import BusClient, BusSettings

    # an interval longer than the test: how many commits fall into one interval does not depend
    # on how fast a loaded machine runs them
    rarely = BusSettings([nats_server.url], mark_interval_s=3600.0)
    async with (
        Replica(tmp_path / "a.db", replica_id="a") as a,
        Replica(tmp_path / "b.db", replica_id="b") as b,
        BusClient(a, BusSettings([nats_server.url])),
    ):
        async with BusClient(b, rarely) as bus:
            await eventually(lambda: _ready(bus), what="b connected")
            assert bus.outbox is not None
            await eventually(lambda: _settled(bus), what="b's first read of its log")
            reads = bus.outbox.log_reads
            for i in range(30):
                await a.add(f"fact {i}", user_id="u1", memory_id=f"f{i}")
                await eventually(lambda n=i + 1: _holds(b, "a", n), what=f"b holds a:{i + 1}")  # type: ignore[misc]
            await eventually(lambda: _marked(bus, 30), what="b's marks follow")
            assert bus.outbox.marks[U1] == {"a": 30}
            assert bus.outbox.log_reads == reads
            assert bus.outbox.published == 0
            assert bus.outbox.mark_writes == 0, "marks written before their interval was over"
            assert b.store.outbox_marks("nats").get(U1, {}) == {}
        assert bus.outbox.mark_writes == 1
        assert b.store.outbox_marks("nats")[U1] == {"a": 30}


async def _marked(bus, seq: int) -> bool:
    return bool(bus.outbox.marks.get(U1, {}).get("a", 0) >= seq)


async def _holds(replica, origin: str, seq: int) -> bool:
    return bool(replica.version_vector(U1).get(origin, 0) >= seq)


async def test_own_entries_are_published_only_once_the_stores_vectors_claim_them(tmp_path):
    """Between a commit and the store publishing its vectors, the log already holds the entry: the
    outbox leaves it for the next pass (the node's own consumer would take it for a forgery)."""
    from crdtmem import Replica
    from crdtmem.bus.outbox import Outbox
    from crdtmem.bus.subjects import Layout
    from crdtmem.metrics import Metrics

    published: list[str] = []

    async def publish(subject: str, data: bytes, msg_id: str, stream: str) -> bool:
        published.append(msg_id)
        return False

    async with Replica(tmp_path / "a.db", replica_id="a") as a:
        for i in range(3):
            await a.add(f"fact {i}", user_id="u1", memory_id=f"f{i}")
        outbox = Outbox(a, Layout.of(), Metrics())
        real = a.store.version_vector
        a.store.version_vector = lambda channel: {"a": 1} if channel == U1 else real(channel)  # type: ignore[method-assign]
        await outbox.publish_pending(publish)
        assert [m.split(":")[1] for m in published] == ["1"]
        assert outbox.marks[U1] == {"a": 1}
        a.store.version_vector = real  # type: ignore[method-assign]
        outbox.on_commit([])
        await outbox.publish_pending(publish)
        assert [m.split(":")[1] for m in published] == ["1", "2", "3"]
        await outbox.settle()
        assert a.store.outbox_marks("nats")[U1] == {"a": 3}


# -- the layout file (serve --bus-layout) ----------------------------------------------------------


def test_a_layout_file_gives_a_tenant_its_stream(tmp_path) -> None:
    path = tmp_path / "layout.json"
    spec = {"name": "CRDTMEM_ACME", "token": "acme", "channels": ["tenant:acme:*"], "max_bytes": 1 << 20}
    path.write_text(json.dumps({"streams": [spec]}))
    layout = Layout.load(path, replicas=3)
    acme = layout.stream_of("tenant:acme:shared")
    assert (acme.name, acme.replicas, acme.max_bytes, acme.max_age_s) == ("CRDTMEM_ACME", 3, 1 << 20, 0.0)
    assert layout.stream_of("tenant:globex:shared").name == "CRDTMEM_TENANTS"
    assert layout.stream_of(U1).replicas == 3


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ([], "a JSON object"),
        ({"streams": [], "extra": 1}, "a JSON object"),
        ({"streams": [{"name": "X", "token": "x"}]}, "stream 1: an object with name, token, channels"),
        ({"streams": [{"name": "X", "token": "x", "channels": "tenant:a:*"}]}, "list of channel patterns"),
        ({"streams": [{"name": "X", "token": "x", "channels": ["u"], "replicas": "3"}]}, "numbers"),
        ({"streams": [{"name": "X Y", "token": "x", "channels": ["tenant:a:*"]}]}, "stream 1: stream name"),
        ({"streams": [{"name": "X", "token": "states", "channels": ["tenant:a:*"]}]}, "is taken"),
        ({"streams": [{"name": "CRDTMEM_USERS", "token": "x", "channels": ["tenant:a:*"]}]}, "twice"),
        ({"streams": [{"name": "X", "token": "x", "channels": ["tenant:a:*"], "replicas": 9}]}, "1 to 5"),
    ],
)
def test_a_wrong_layout_file_is_refused_saying_what_is_wrong(tmp_path, body, says) -> None:
    path = tmp_path / "layout.json"
    path.write_text(json.dumps(body))
    with pytest.raises(InvalidInput, match=says):
        Layout.load(path)


def test_an_unreadable_layout_file_is_refused(tmp_path) -> None:
    with pytest.raises(InvalidInput, match="cannot read the bus layout"):
        Layout.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InvalidInput, match="cannot read the bus layout"):
        Layout.load(tmp_path / "bad.json")


async def test_nodes_serve_with_a_layout_file(procs, session, tmp_path, nats_server):
    import nats as nats_client

    layout = tmp_path / "layout.json"
    spec = {"name": "CRDTMEM_ACME", "token": "acme", "channels": ["tenant:acme:*"], "max_age_s": 3600}
    layout.write_text(json.dumps({"streams": [spec]}))
    a = bus_node(tmp_path, "a", [nats_server.url], "--bus-layout", str(layout)).start()
    b = bus_node(tmp_path, "b", [nats_server.url], "--bus-layout", str(layout)).start()
    procs += [a, b]
    api_a, api_b = Api(session, a.url), Api(session, b.url)
    await ready(api_a)
    await ready(api_b)
    await api_a.add("acme's", tenant_id="acme", shared=True, id="t1")
    await eventually(lambda: has(api_b, "t1", "acme's"), what="the tenant's memory on b")
    nc = await nats_client.connect(nats_server.url)
    try:
        info = await nc.jetstream().stream_info("CRDTMEM_ACME", subjects_filter="crdtmem.acme.>")
        assert info.config.max_age == 3600
        assert (info.state.subjects or {}).get("crdtmem.acme.tenant.acme", 0) >= 1
    finally:
        await nc.close()
    broken = tmp_path / "broken.json"
    broken.write_text('{"streams": [{"name": "X"}]}')
    node = bus_node(tmp_path, "c", [nats_server.url], "--bus-layout", str(broken))
    with pytest.raises(RuntimeError, match="stream 1: an object with name"):
        node.start()
