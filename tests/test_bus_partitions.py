"""Partitions of the subject mapping (crdtmem.bus.partitions, subject mapping version 2): every
channel has one partitioned subject and back, the old subjects are still read, a subject in the
wrong partition is refused; on a real JetStream server two nodes serving disjoint partitions and
one serving all of them each get exactly their channels, through a few wildcard filter subjects;
a layout that splits the users into streams per range of partitions puts each user's entries in
its range's stream, and a node serving one range reads that stream only."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crdtmem import Replica
from crdtmem.access import Principal
from crdtmem.bus import BusClient, BusSettings, Layout, StreamSpec, channel_of
from crdtmem.bus.partitions import from_token, parse_set, partition_of, token
from crdtmem.bus.states import StatesUnavailable, fetch_states
from crdtmem.errors import InvalidInput, NotFound
from crdtmem.ids import Channel
from tests.support.processes import ServerProcess
from tests.support.rest import Api, eventually
from tests.test_bus import app_ids
from tests.test_bus_faults import bus_node, exists, ready

P = 8


@given(app_ids, st.sampled_from(["user", "tenant", "topic"]), st.integers(1, 65_536))
def test_every_channel_has_one_partitioned_subject_and_back(name: str, kind: str, count: int) -> None:
    channel = str(getattr(Channel, kind)(name))
    layout = Layout.of(partitions=count)
    subject = layout.subject(channel)
    tokens = subject.split(".")
    assert len(tokens) == 5 and all(tokens), subject
    assert not any(c.isspace() or c in "*>" for c in subject), subject
    assert subject.isascii()
    assert tokens[3] == token(partition_of(name, count)) and from_token(tokens[3]) == layout.partition(
        channel
    )
    assert channel_of(subject, "crdtmem", count) == channel
    # the subject of the mapping before partitions is still read by a partitioned node
    assert channel_of(Layout.of().subject(channel), "crdtmem", count) == channel


def test_partitioned_subjects_as_documented() -> None:
    layout = Layout.of(partitions=256)
    assert partition_of("alice@example.com", 256) == 191
    assert layout.subject("user:alice@example.com:memories") == "crdtmem.users.user.p191.alice@example%2Ecom"
    assert layout.subject("system:global") == f"crdtmem.system.system.p{partition_of('global', 256)}.global"
    assert Layout.of().subject("user:alice@example.com:memories") == "crdtmem.users.user.alice@example%2Ecom"
    assert layout.filters(None, frozenset({3, 17}))["CRDTMEM_USERS"] == [
        "crdtmem.users.*.p17.*",
        "crdtmem.users.*.p3.*",
    ]  # sorted as the server lists them, so a restart finds its consumer unchanged
    eight = Layout.of(partitions=P)
    inside = [f"user:u{n}:memories" for n in range(40) if partition_of(f"u{n}", P) == 3]
    outside = [f"user:u{n}:memories" for n in range(40) if partition_of(f"u{n}", P) != 3]
    assert inside and outside
    assert eight.filters(inside + outside, frozenset({3})) == {
        "CRDTMEM_USERS": sorted(eight.subject(c) for c in inside)
    }


def test_subjects_in_the_wrong_partition_or_form_are_refused() -> None:
    right = Layout.of(partitions=P).subject("user:u1:memories")
    n = from_token(right.split(".")[3])
    assert n is not None
    for subject in [
        right.replace(f".p{n}.", f".p{(n + 1) % P}."),  # another partition's subject
        right.replace(f".p{n}.", ".q1."),
        right.replace(f".p{n}.", f".p0{n}."),  # not the canonical token
        "crdtmem.users.user.p1.u1.x",
    ]:
        with pytest.raises(InvalidInput):
            channel_of(subject, "crdtmem", P)
    with pytest.raises(InvalidInput):  # a layout without partitions reads no partition token
        channel_of(right)


def test_partition_sets_and_counts_are_checked() -> None:
    assert parse_set("0-3, 6", 8) == frozenset({0, 1, 2, 3, 6})
    for bad in ["8", "3-1", "a", "1-", "-1"]:
        with pytest.raises(ValueError):
            parse_set(bad, 8)
    with pytest.raises(ValueError, match="no partitions"):
        parse_set("0", 0)
    with pytest.raises(InvalidInput, match="partitions"):
        Layout.of(partitions=65_537)
    assert Layout.from_json({"partitions": 16}).partitions == 16
    with pytest.raises(InvalidInput, match="'partitions' is 16, but 8"):
        Layout.from_json({"partitions": 16}, partitions=8)
    with pytest.raises(InvalidInput, match="some of its layout's"):
        BusClient(None, BusSettings(["nats://127.0.0.1:1"], partitions=frozenset({0})))  # type: ignore[arg-type]


def _users(count: int) -> list[str]:
    return [f"u{n}" for n in range(count)]


async def test_nodes_serving_disjoint_partitions_and_one_serving_all(tmp_path: Path, nats_server) -> None:
    layout = Layout.of(partitions=P)
    low, high = frozenset(range(P // 2)), frozenset(range(P // 2, P))
    users = _users(24)
    by_part = {u: partition_of(u, P) for u in users}
    assert {by_part[u] in low for u in users} == {True, False}, "users on both halves"

    def settings(partitions: frozenset[int] | None) -> BusSettings:
        return BusSettings([nats_server.url], layout=layout, partitions=partitions)

    async with (
        Replica(tmp_path / "all.db", replica_id="all") as everything,
        Replica(tmp_path / "low.db", replica_id="low") as a,
        Replica(tmp_path / "high.db", replica_id="high") as b,
        BusClient(everything, settings(None)) as bus_all,
        BusClient(a, settings(low)) as bus_a,
        BusClient(b, settings(high)) as bus_b,
    ):
        await eventually(lambda: _ready(bus_all, bus_a, bus_b), what="three nodes on the bus")
        for user in users:
            await everything.add(f"{user} from all", user_id=user, memory_id=f"{user}-all")
        for user in users:  # each partition node writes for its own users
            writer = a if by_part[user] in low else b
            await writer.add(f"{user} from {writer.id}", user_id=user, memory_id=f"{user}-{writer.id}")

        async def spread() -> bool:
            for user in users:
                holder = a if by_part[user] in low else b
                if not await _has(holder, f"{user}-all") or not await _has(everything, f"{user}-{holder.id}"):
                    return False
            return True

        await eventually(spread, what="each node holds its partitions' memories")
        await eventually(lambda: _drained(bus_all, bus_a, bus_b), what="every consumer drained")

        def consumed(*buses: BusClient) -> int:
            return sum(bus.consumers["CRDTMEM_USERS"].consumed for bus in buses)

        # a node's own messages come back to it too, and may still be on their way when the others
        # hold everything: wait for the count, then check that no message was read twice
        messages = 2 * len(users)
        await eventually(lambda: _at_least(consumed(bus_a, bus_b), messages), what="low and high read all")
        await eventually(lambda: _at_least(consumed(bus_all), messages), what="all read every message")
        for user in users:
            channel = str(Channel.user(user))
            holder, other = (a, b) if by_part[user] in low else (b, a)
            assert holder.version_vector(channel) == everything.version_vector(channel)
            assert not await _has(other, f"{user}-all"), (
                f"{other.id} holds nothing of partition {by_part[user]}"
            )
        assert consumed(bus_a, bus_b) == messages  # every message read by one of them, once
        assert consumed(bus_all) == messages
        js = bus_a._nc.jetstream()  # the consumer's configuration on the server
        info = await js.consumer_info("CRDTMEM_USERS", "crdtmem-low")
        assert sorted(info.config.filter_subjects) == sorted(f"crdtmem.users.*.p{n}.*" for n in low)


async def _at_least(count: int, wanted: int) -> bool:
    return count >= wanted


async def _ready(*buses: BusClient) -> bool:
    return all(bus.ready for bus in buses)


async def _drained(*buses: BusClient) -> bool:
    return all(
        bus.outbox is not None and bus.outbox.lag() == 0 and all(c.lag == 0 for c in bus.consumers.values())
        for bus in buses
    ) and all(bus.caught_up.is_set() for bus in buses)


async def _has(replica: Replica, memory_id: str) -> bool:
    try:
        return await replica.get(memory_id) is not None
    except NotFound:
        return False


async def test_serve_with_partitions(procs, session, tmp_path: Path, nats_server) -> None:
    """``serve --bus-partitions 8 --bus-serve-partitions 0-3`` beside a node serving all of them."""
    inside = next(f"u{n}" for n in range(100) if partition_of(f"u{n}", P) < 4)
    outside = next(f"u{n}" for n in range(100) if partition_of(f"u{n}", P) >= 4)
    full = bus_node(tmp_path, "full", [nats_server.url], "--bus-partitions", "8").start()
    half = bus_node(
        tmp_path, "half", [nats_server.url], "--bus-partitions", "8", "--bus-serve-partitions", "0-3"
    ).start()
    procs += [full, half]
    api_full, api_half = Api(session, full.url), Api(session, half.url)
    await ready(api_full)
    await ready(api_half)
    await api_full.add("in the half's partitions", user_id=inside, id="in")
    await api_full.add("outside them", user_id=outside, id="out")
    await api_half.add("from the half", user_id=inside, id="back")
    await eventually(lambda: exists(api_half, "in"), what="the half node gets its partitions' memory")
    await eventually(lambda: exists(api_full, "back"), what="the full node gets the half's write")
    assert await api_half.get("out") is None
    refused = ServerProcess(
        tmp_path, "bad", extra=["--bus", nats_server.url, "--bus-serve-partitions", "0-3"]
    )
    done = subprocess.run(refused.command(), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "--bus-serve-partitions: the layout has no partitions" in done.stderr


async def test_a_node_fills_its_partitions_from_states_of_a_node_serving_them(
    tmp_path: Path, nats_server
) -> None:
    """No node holds every channel: states of some partitions come from a node serving them all."""
    layout = Layout.of(partitions=P)
    low = frozenset(range(P // 2))
    users = [u for u in _users(40) if partition_of(u, P) in low]
    mine = frozenset({partition_of(users[0], P)})
    applies_states = Principal("user:bus", ("*",), ("*",), ("*",), (), True)
    async with (
        Replica(tmp_path / "half.db", replica_id="half") as half,
        Replica(tmp_path / "new.db", replica_id="new") as new,
        BusClient(half, BusSettings([nats_server.url], layout=layout, partitions=low)) as bus,
    ):
        for user in users:
            await half.add(f"{user}'s fact", user_id=user, memory_id=user)
        await eventually(lambda: _drained(bus), what="half's stream drained")
        nc = bus._nc  # the serving node's own connection carries the request as well as any
        with pytest.raises(StatesUnavailable, match="holds only some of the channels"):
            await fetch_states(nc, new, layout, applies_states, "CRDTMEM_USERS", 1, wait=2.0, timeout=10.0)
        await fetch_states(
            nc, new, layout, applies_states, "CRDTMEM_USERS", 1, wait=2.0, timeout=10.0, partitions=mine
        )
        held = {m.id for m in await new.list()}
        assert held == {u for u in users if partition_of(u, P) in mine}


def _ranged(count: int = P) -> Layout:
    """Users in two streams by partition range, ahead of the defaults."""
    half = count // 2
    low = StreamSpec("CRDTMEM_USERS_0", "users0", ("user:*:memories",), partitions=frozenset(range(half)))
    high = StreamSpec(
        "CRDTMEM_USERS_1", "users1", ("user:*:memories",), partitions=frozenset(range(half, count))
    )
    return Layout.of([low, high], partitions=count)


def test_streams_per_partition_range_place_and_filter_by_partition() -> None:
    layout = _ranged()
    for user in _users(40):
        channel = f"user:{user}:memories"
        n = partition_of(user, P)
        stream = layout.stream_of(channel)
        assert stream.name == ("CRDTMEM_USERS_0" if n < P // 2 else "CRDTMEM_USERS_1")
        assert layout.subject(channel) == f"crdtmem.{stream.token}.user.p{n}.{user}"
        assert channel_of(layout.subject(channel), "crdtmem", P) == channel
    assert layout.stream_of("tenant:acme:shared").name == "CRDTMEM_TENANTS"  # other kinds as before
    filters = layout.filters(None, frozenset({1, 6}))
    assert filters["CRDTMEM_USERS_0"] == ["crdtmem.users0.*.p1.*"]
    assert filters["CRDTMEM_USERS_1"] == ["crdtmem.users1.*.p6.*"]
    # the default users stream is still read (it holds what was written before the split)
    assert filters["CRDTMEM_USERS"] == ["crdtmem.users.*.p1.*", "crdtmem.users.*.p6.*"]
    assert "CRDTMEM_USERS_1" not in layout.filters(None, frozenset({0, 1}))  # no range of it served
    in_low = next(f"user:{u}:memories" for u in _users(40) if partition_of(u, P) < P // 2)
    assert layout.filters([in_low], None) == {"CRDTMEM_USERS_0": [layout.subject(in_low)]}


def test_a_layout_file_gives_streams_ranges_of_partitions_and_wrong_ones_are_refused() -> None:
    spec = {"name": "CRDTMEM_USERS_0", "token": "users0", "channels": ["user:*:memories"]}
    layout = Layout.from_json({"partitions": 8, "streams": [{**spec, "partitions": "0-3"}]})
    assert layout.streams[0].partitions == frozenset(range(4))
    assert Layout.from_json({"streams": [{**spec, "partitions": "0-3"}]}, partitions=8) == layout
    for body, message in [
        ({"streams": [{**spec, "partitions": "0-3"}]}, "no partitions"),  # the layout has none
        ({"partitions": 8, "streams": [{**spec, "partitions": "4-8"}]}, "stream 1: partitions"),
        ({"partitions": 8, "streams": [{**spec, "partitions": [0, 1]}]}, "numbers and ranges"),
        ({"partitions": 8, "streams": [{**spec, "partitions": ""}]}, "stream 1: partitions"),
    ]:
        with pytest.raises(InvalidInput, match=message):
            Layout.from_json(body)
    ranged = StreamSpec("CRDTMEM_USERS_0", "users0", ("user:*:memories",), partitions=frozenset({9}))
    with pytest.raises(InvalidInput, match="holds partitions 9, but the layout has 8 partitions"):
        Layout.of([ranged], partitions=8)
    with pytest.raises(InvalidInput, match="holds partitions 9, but the layout has 0 partitions"):
        Layout.of([ranged])


async def test_a_users_stream_per_partition_range_on_a_real_server(tmp_path: Path, nats_server) -> None:
    """Two users streams by range: every user's entries land in its range's stream only; a node
    serving the low range has no consumer on the high range's stream and holds the low users'
    memories only; a node serving every partition reads both streams and holds everything."""
    layout = _ranged()
    low = frozenset(range(P // 2))
    users = _users(24)
    by_part = {u: partition_of(u, P) for u in users}
    assert {by_part[u] in low for u in users} == {True, False}, "users in both ranges"

    def settings(partitions: frozenset[int] | None) -> BusSettings:
        return BusSettings([nats_server.url], layout=layout, partitions=partitions)

    async with (
        Replica(tmp_path / "all.db", replica_id="all") as everything,
        Replica(tmp_path / "low.db", replica_id="low") as a,
        BusClient(everything, settings(None)) as bus_all,
        BusClient(a, settings(low)) as bus_a,
    ):
        await eventually(lambda: _ready(bus_all, bus_a), what="two nodes on the bus")
        for user in users:
            await everything.add(f"{user} from all", user_id=user, memory_id=f"{user}-all")
        lows = [u for u in users if by_part[u] in low]
        for user in lows:
            await a.add(f"{user} from low", user_id=user, memory_id=f"{user}-low")

        async def spread() -> bool:
            for user in lows:
                if not await _has(a, f"{user}-all") or not await _has(everything, f"{user}-low"):
                    return False
            return True

        await eventually(spread, what="each node holds its partitions' memories")
        await eventually(lambda: _drained(bus_all, bus_a), what="every consumer drained")
        for user in users:
            if by_part[user] not in low:
                assert not await _has(a, f"{user}-all"), f"low holds nothing of partition {by_part[user]}"
        assert set(bus_a.consumers) == {"CRDTMEM_USERS_0", "CRDTMEM_USERS", *_other_streams()}
        assert {"CRDTMEM_USERS_0", "CRDTMEM_USERS_1"} <= set(bus_all.consumers)
        js = bus_all._nc.jetstream()
        for stream, held in (
            ("CRDTMEM_USERS_0", lows),
            ("CRDTMEM_USERS_1", [u for u in users if u not in lows]),
        ):
            info = await js.stream_info(stream, subjects_filter=">")
            subjects = set(info.state.subjects or {})
            assert subjects == {layout.subject(f"user:{u}:memories") for u in held}, stream
            per_user = 2 if stream == "CRDTMEM_USERS_0" else 1  # low users were written by both nodes
            assert info.state.messages == per_user * len(held)
        assert (await js.stream_info("CRDTMEM_USERS")).state.messages == 0, (
            "nothing in the default users stream"
        )
        info = await js.consumer_info("CRDTMEM_USERS_0", "crdtmem-low")
        assert sorted(info.config.filter_subjects) == sorted(f"crdtmem.users0.*.p{n}.*" for n in low)


def _other_streams() -> list[str]:
    return ["CRDTMEM_TENANTS", "CRDTMEM_TOPICS", "CRDTMEM_SYSTEM"]
