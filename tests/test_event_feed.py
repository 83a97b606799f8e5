"""GET /v1/events against a real node: SSE and WebSocket, access, resume without gaps or duplicates,
overflow, heartbeats and shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from crdtmem import Limits, Memory, MemoryEvent, Replica
from crdtmem.access import TokenTable
from crdtmem.server import Node
from crdtmem.server import feed as feed_module
from crdtmem.server import node as node_module

# app.py stores the principal under a str key, which aiohttp >= 3.14 warns about once per process.

ADMIN = "admin-token-0123456789"
ACME = "acme-token-0123456789"
GLOBEX = "globex-token-0123456789"
USERS_READER = "users-reader-0123456789"
ALICE = "user:alice:memories"
TOKENS = TokenTable.from_json(
    {
        "tokens": [
            {"token": ADMIN, "principal": "user:admin", "read": ["*"], "write": ["*"], "origins": ["*"]},
            {
                "token": ACME,
                "principal": "user:acme-agent",
                "read": ["tenant:acme:shared", ALICE],
                "write": ["tenant:acme:shared", ALICE],
            },
            {
                "token": GLOBEX,
                "principal": "user:globex-agent",
                "read": ["tenant:globex:shared", "user:bob:memories"],
                "write": ["tenant:globex:shared", "user:bob:memories"],
            },
            {"token": USERS_READER, "principal": "user:support", "read": ["user:*:memories"], "write": []},
        ]
    }
)
TIMEOUT = 5.0


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with Node(Replica(tmp_path / "a.db", replica_id="a"), tokens=TOKENS) as running:
        yield running


class Api:
    def __init__(self, session: aiohttp.ClientSession, node: Node, token: str):
        self.session, self.url, self.token = session, node.url, token

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        async with self.session.request(
            method, self.url + path, json=body, headers=auth(self.token)
        ) as response:
            data = await response.json()
            assert response.status == status, data
            return data

    async def add(self, content: Any, **fields: Any) -> dict[str, Any]:
        return dict(await self.call("POST", "/v1/memories", {"content": content, **fields}, 201))

    async def patch(self, memory_id: str, **fields: Any) -> dict[str, Any]:
        return dict(await self.call("PATCH", f"/v1/memories/{memory_id}", fields))


@pytest.fixture
def api(node: Node, session: aiohttp.ClientSession) -> Api:
    return Api(session, node, ADMIN)


class Sse:
    """Reads Server-Sent Events messages off a streaming response."""

    def __init__(self, response: aiohttp.ClientResponse):
        self.response = response

    async def message(self, timeout: float = TIMEOUT) -> dict[str, Any] | None:
        """The next message as {id, event, data, comments}; None at the end of the stream."""
        fields: dict[str, Any] = {"comments": [], "data": []}
        while True:
            line = await asyncio.wait_for(self.response.content.readline(), timeout)
            if not line:
                return None
            text = line.decode().rstrip("\n")
            if not text:
                if fields["data"] or fields["comments"] or "event" in fields:
                    fields["data"] = json.loads("\n".join(fields["data"])) if fields["data"] else None
                    return fields
                continue
            if text.startswith(":"):
                fields["comments"].append(text[1:].strip())
                continue
            name, _, value = text.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                fields["data"].append(value)
            elif name in ("id", "event", "retry"):
                fields[name] = value

    async def event(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next message that is not only comments."""
        while True:
            message = await self.message(timeout)
            assert message is not None, "the stream ended"
            if "event" in message or message["data"] is not None:
                return message

    async def events(self, count: int) -> list[dict[str, Any]]:
        return [await self.event() for _ in range(count)]

    async def quiet(self, seconds: float = 0.3) -> None:
        """Assert that no event arrives for a while."""
        try:
            message = await self.event(timeout=seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected event {message}")


def open_sse(
    session: aiohttp.ClientSession, node: Node, token: str, query: str = "", last_event_id: str | None = None
) -> Any:
    headers = auth(token)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return session.get(f"{node.url}/v1/events{query}", headers=headers)


def check_seed_schema(message: dict[str, Any]) -> dict[str, Any]:
    """A MemoryEvent in the seed design's schema, with SSE id/event matching it."""
    data = message["data"]
    assert message["id"] == data["event_id"] and message["event"] == data["event_type"]
    assert data["event_type"] in ("create", "update", "delete", "conflict", "resolve")
    datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00"))
    memory = data["memory"]
    assert {"id", "content", "embedding", "type", "metadata"} <= set(memory)
    assert memory["type"] == memory["kind"]
    assert set(data["source"]) == {"agent_id", "session_id", "user_id"}
    assert data["channels"] == memory["channels"] and data["channels"]
    replica, _, version = data["event_id"].partition(":")
    assert replica == "a" and int(version) == memory["version"]
    return dict(data)


async def make_conflict(node: Node, api: Api, memory_id: str) -> None:
    channels = list((await node.replica.get(memory_id)).channels)
    async with Replica(replica_id="b") as other:
        await other.apply(await node.replica.export_since(channels))
        await other.update(memory_id, content="from b")
        await api.patch(memory_id, content="from a")
        payload = await other.export_since(channels, node.replica.version_vectors(channels))
    async with api.session.post(node.url + "/v1/sync/push", data=payload, headers=auth(ADMIN)) as response:
        assert response.status == 200, await response.text()


# -- SSE -----------------------------------------------------------------------------------------


async def test_sse_carries_every_event_type_in_the_seed_schema(
    node: Node, session: aiohttp.ClientSession, api: Api
) -> None:
    async with open_sse(session, node, ACME, f"?channel={ALICE}") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        sse = Sse(response)
        memory = await api.add("v1", user_id="alice", agent_id="phone", session_id="s1")
        await api.patch(memory["id"], content="v2")
        await make_conflict(node, api, memory["id"])
        await api.call("POST", f"/v1/memories/{memory['id']}/resolve", {"field": "content", "value": "v3"})
        await api.call("DELETE", f"/v1/memories/{memory['id']}")
        events = [check_seed_schema(m) for m in await sse.events(6)]
        assert [e["event_type"] for e in events] == [
            "create",
            "update",
            "update",
            "conflict",
            "resolve",
            "delete",
        ]
        assert [e["memory"]["content"] for e in events[:2]] == ["v1", "v2"]
        assert events[0]["source"] == {"agent_id": "phone", "session_id": "s1", "user_id": "alice"}
        assert events[3]["origin"] == "b" and events[3]["memory"]["conflicts"] == ["content"]
        assert events[4]["memory"]["content"] == "v3" and not events[4]["memory"]["conflicted"]
        assert events[5]["memory"]["deleted"] is True
        versions = [e["memory"]["version"] for e in events]
        assert versions == sorted(set(versions))


async def test_sse_filters_by_channel(node: Node, session: aiohttp.ClientSession, api: Api) -> None:
    async with open_sse(
        session, node, ADMIN, "?channel=tenant:acme:shared,topic:billing:updates"
    ) as response:
        sse = Sse(response)
        await api.add("alice only", user_id="alice")
        shared = await api.add("acme", tenant_id="acme")
        topical = await api.add("billing", user_id="bob", topics=["billing"])
        got = [m["data"]["memory"]["id"] for m in await sse.events(2)]
        assert got == [shared["id"], topical["id"]]
        await sse.quiet()


async def test_default_channels_are_the_readable_ones(
    node: Node, session: aiohttp.ClientSession, api: Api
) -> None:
    async with open_sse(session, node, ACME) as acme, open_sse(session, node, USERS_READER) as support:
        await api.add("bob's", user_id="bob", tenant_id="globex")
        alice = await api.add("alice's", user_id="alice")
        shared = await api.add("acme-wide", tenant_id="acme")
        carol = await api.add("carol's", user_id="carol")
        assert [m["data"]["memory"]["id"] for m in await Sse(acme).events(2)] == [alice["id"], shared["id"]]
        await Sse(acme).quiet()
        got = [m["data"]["memory"]["id"] for m in await Sse(support).events(3)]
        assert got[1:] == [alice["id"], carol["id"]]  # bob's too: user:*:memories


async def test_open_node_streams_everything(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    async with (
        Node(Replica(tmp_path / "o.db", replica_id="o")) as open_node,
        session.get(open_node.url + "/v1/events") as response,
    ):
        sse = Sse(response)
        await open_node.replica.add("global")
        await open_node.replica.add("tenant", tenant_id="t")
        assert [m["data"]["memory"]["content"] for m in await sse.events(2)] == ["global", "tenant"]


async def test_heartbeat_comments_when_idle(
    node: Node, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "HEARTBEAT_SECONDS", 0.2)
    monkeypatch.setattr(feed_module, "POLL_SECONDS", 0.05)
    async with open_sse(session, node, ACME) as response:
        sse = Sse(response)
        seen: list[str] = []
        while "heartbeat" not in seen:
            message = await sse.message(timeout=2)
            assert message is not None
            seen += message["comments"]


# -- access and bad requests ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "query", "status"),
    [
        (ACME, "?channel=tenant:globex:shared", 403),
        (ACME, f"?channel={ALICE}&channel=user:bob:memories", 403),
        (GLOBEX, f"?channel={ALICE}", 403),
        (USERS_READER, "?channel=tenant:acme:shared", 403),
        (ACME, "?channel=tenant:acme", 400),
        (ACME, "?channel=bogus", 400),
        (ACME, "?chanel=user:alice:memories", 400),
        (ACME, "?last_event_id=garbage", 400),
        (ACME, "?last_event_id=a:-1", 400),
        (ACME, "?last_event_id=a:1x", 400),
        ("wrong-token-0123456789", "", 401),
    ],
)
async def test_sse_and_ws_refusals(
    node: Node, session: aiohttp.ClientSession, token: str, query: str, status: int
) -> None:
    async with open_sse(session, node, token, query) as response:
        assert response.status == status
        body = await response.json()
        assert set(body) == {"error", "message"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(f"{node.url}/v1/events{query}", headers=auth(token))
    assert refused.value.status == status
    assert len(node.replica.feed) == 0


async def test_no_readable_channel_is_403(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    tokens = TokenTable.from_json(
        {"tokens": [{"token": "writer-token-0123456789", "principal": "user:w", "read": [], "write": ["*"]}]}
    )
    async with (
        Node(Replica(tmp_path / "w.db", replica_id="w"), tokens=tokens) as writer_node,
        open_sse(session, writer_node, "writer-token-0123456789") as response,
    ):
        assert response.status == 403


# -- resume --------------------------------------------------------------------------------------


async def test_resume_with_last_event_id_replays_what_changed(
    node: Node, session: aiohttp.ClientSession, api: Api
) -> None:
    query = f"?channel={ALICE}"
    async with open_sse(session, node, ACME, query) as response:
        sse = Sse(response)
        one = await api.add("one", user_id="alice")
        two = await api.add("two", user_id="alice")
        seen = await sse.events(2)
    last_id = seen[-1]["id"]

    await api.patch(one["id"], content="one v2")
    await api.add("not alice's", user_id="bob")
    three = await api.add("three", user_id="alice")
    await api.call("DELETE", f"/v1/memories/{two['id']}")

    async with open_sse(session, node, ACME, query, last_event_id=last_id) as response:
        sse = Sse(response)
        replay = [check_seed_schema(m) for m in await sse.events(3)]
        assert [(e["memory"]["id"], e["event_type"]) for e in replay] == [
            (one["id"], "update"),
            (three["id"], "update"),
            (two["id"], "delete"),
        ]
        assert replay[0]["memory"]["content"] == "one v2"
        await sse.quiet()
        four = await api.add("four", user_id="alice")
        live = check_seed_schema(await sse.event())
        assert (live["memory"]["id"], live["event_type"]) == (four["id"], "create")

    # the query parameter works like the header, and an id from the newest event replays nothing
    async with open_sse(session, node, ACME, f"{query}&last_event_id={live['event_id']}") as response:
        await Sse(response).quiet()


async def test_resume_tells_of_memories_forgotten_meanwhile(
    node: Node, session: aiohttp.ClientSession, api: Api
) -> None:
    query = f"?channel={ALICE}"
    async with open_sse(session, node, ACME, query) as response:
        sse = Sse(response)
        kept = await api.add("kept", user_id="alice")
        secret = await api.add("SECRET alice", user_id="alice")
        last_id = (await sse.events(2))[-1]["id"]
    bobs = await api.add("SECRET bob", user_id="bob")
    for memory in (secret, bobs):
        await api.call("DELETE", f"/v1/memories/{memory['id']}?purge=true")
    await api.patch(kept["id"], content="kept v2")

    async with open_sse(session, node, ACME, query, last_event_id=last_id) as response:
        sse = Sse(response)
        forgotten, updated = await sse.events(2)  # bob's memory is not on the stream's channels
        assert forgotten["event"] == "forgotten" and forgotten["id"] == forgotten["data"]["event_id"]
        assert {k: forgotten["data"][k] for k in ("memory_id", "channels", "origin")} == {
            "memory_id": secret["id"],
            "channels": [ALICE],
            "origin": "a",
        }
        assert "memory" not in forgotten["data"] and "SECRET" not in json.dumps(forgotten["data"])
        assert (updated["event"], updated["data"]["memory"]["content"]) == ("update", "kept v2")
        await sse.quiet()

    # resuming from the forgotten event's own id replays only what came after it
    async with open_sse(session, node, ACME, query, last_event_id=forgotten["id"]) as response:
        (after,) = await Sse(response).events(1)
        assert after["id"] == updated["id"]
    # a replay from the start has nothing to forget: the memories that exist follow
    async with open_sse(session, node, ADMIN, last_event_id="a:0") as response:
        replay = await Sse(response).events(1)
        assert [e["event"] for e in replay] == ["create"]


async def test_resume_from_zero_or_another_replica_replays_everything(
    node: Node, session: aiohttp.ClientSession, api: Api
) -> None:
    first = await api.add("first", user_id="alice")
    second = await api.add("second", user_id="alice")
    for last_id in ("a:0", "some-other-replica:12345", "a:999999"):
        async with open_sse(session, node, ACME, last_event_id=last_id) as response:
            sse = Sse(response)
            if last_id != "a:0":  # an id this replica cannot place: drop what you hold, first
                reset = await sse.event()
                assert reset["event"] == "reset" and "id" not in reset, reset
                assert reset["data"]["event_type"] == "reset" and reset["data"]["last_event_id"] == last_id
                assert reset["data"]["replica_id"] == "a" and "drop what you hold" in reset["data"]["reason"]
            replay = await sse.events(2)
            assert [(m["data"]["memory"]["id"], m["event"]) for m in replay] == [
                (first["id"], "create"),
                (second["id"], "create"),
            ]


async def test_a_replay_is_read_page_by_page_in_version_order_across_channels(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """Pages of two memories, two subscribed channels, a memory on both: every memory once, in
    version order, and the live feed after."""
    replica = Replica(tmp_path / "p.db", replica_id="a", limits=Limits(feed_page=2))
    async with Node(replica, tokens=TOKENS) as paged:
        api = Api(session, paged, ADMIN)
        made = []
        for i in range(7):
            made.append(await api.add(f"alice {i}", user_id="alice"))
            made.append(await api.add(f"acme {i}", tenant_id="acme", shared=True))
        both = await api.add("on both", user_id="alice", tenant_id="acme", shared=True)
        query = "?channel=tenant:acme:shared&channel=user:alice:memories"
        async with open_sse(session, paged, ACME, query, last_event_id="elsewhere:1") as response:
            sse = Sse(response)
            assert (await sse.event())["event"] == "reset"
            replayed = [check_seed_schema(await sse.event()) for _ in range(len(made) + 1)]
            ids = [e["memory"]["id"] for e in replayed]
            assert ids == [m["id"] for m in [*made, both]]
            versions = [e["memory"]["version"] for e in replayed]
            assert versions == sorted(versions)
            await sse.quiet()
            later = await api.add("after the replay", user_id="alice")
            assert check_seed_schema(await sse.event())["memory"]["id"] == later["id"]


async def test_a_replay_reads_its_pages_off_the_event_loop_each_within_the_page_size(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """A replay's pages (SQLite and the records' JSON) are read on a worker thread, each at most
    REPLAY_PAGE_CHARS of records: a replay of large memories holds the event loop for an event at a
    time, not for a page of megabytes."""
    replica = Replica(tmp_path / "big.db", replica_id="a")
    async with Node(replica, tokens=TOKENS) as served:
        api = Api(session, served, ADMIN)
        made = [await api.add("x" * 100_000, user_id="alice") for _ in range(24)]
        pages: list[tuple[int, int, int]] = []  # (thread, characters, memories)
        query = replica.store.query_records

        def spied(**kwargs: Any) -> list[dict[str, Any]]:
            found = query(**kwargs)
            if kwargs.get("max_chars") is not None:
                size = sum(len(json.dumps(r, separators=(",", ":"))) for r in found)
                pages.append((threading.get_ident(), size, len(found)))
            return found

        replica.store.query_records = spied  # type: ignore[method-assign]
        async with open_sse(
            session, served, ADMIN, f"?channel={ALICE}", last_event_id="elsewhere:1"
        ) as response:
            sse = Sse(response)
            assert (await sse.event())["event"] == "reset"
            replayed = [await sse.event() for _ in made]
        assert [e["data"]["memory"]["id"] for e in replayed] == [m["id"] for m in made]
        assert len(pages) >= 3 and all(thread != threading.get_ident() for thread, _, _ in pages), pages
        assert all(size <= feed_module.REPLAY_PAGE_CHARS for _, size, _ in pages), pages
        assert 1 < max(count for _, _, count in pages) < len(made), pages


async def test_resume_during_concurrent_writes_has_no_gaps_or_duplicates(
    node: Node, session: aiohttp.ClientSession, api: Api
) -> None:
    """Reconnect again and again while writes keep coming; every client-side view is gap-free."""
    memories = [await api.add(f"m{i}", user_id="alice") for i in range(3)]
    stop = asyncio.Event()

    async def writer() -> None:
        n = 0
        while not stop.is_set():
            target = memories[n % len(memories)]
            await node.replica.update(target["id"], content=f"{target['id']} v{n}")
            if n % 7 == 0:
                memories.append((await node.replica.add(f"new {n}", user_id="alice")).to_dict())
            n += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    received: list[dict[str, Any]] = []
    last_id: str | None = None
    try:
        for _round in range(8):
            async with open_sse(session, node, ACME, f"?channel={ALICE}", last_event_id=last_id) as response:
                sse = Sse(response)
                for _ in range(5):
                    message = await sse.event()
                    received.append(message["data"])
                    last_id = message["id"]
            await asyncio.sleep(0.05)  # away for a while: the next connection starts with a replay
    finally:
        stop.set()
        await task
    final = {m.id: m.to_dict() for m in await node.replica.list(channel=ALICE)}
    expected = {memory_id: {**memory, "type": memory["kind"]} for memory_id, memory in final.items()}
    latest: dict[str, dict[str, Any]] = {}
    for event in received:
        latest[event["memory"]["id"]] = event["memory"]
    async with open_sse(session, node, ACME, f"?channel={ALICE}", last_event_id=last_id) as response:
        sse = Sse(response)
        # the writes are over: the replay ends with the final state of every memory (a gap or a
        # missed change leaves the client short of it and times out); what comes after it, if
        # anything, is read too, for the order and duplicate checks below
        while latest != expected:
            try:
                message = await sse.event()
            except TimeoutError:
                raise AssertionError("the client missed a change: the replay ended short of it") from None
            received.append(message["data"])
            latest[message["data"]["memory"]["id"]] = message["data"]["memory"]
        await sse.quiet()

    versions = [e["memory"]["version"] for e in received]
    assert versions == sorted(versions) and len(versions) == len(set(versions)), "duplicate or out of order"
    assert set(latest) == set(final), "a memory never reached the client"
    for memory_id, memory in expected.items():
        assert latest[memory_id] == memory, "the client missed a change"


async def test_a_write_between_subscribing_and_the_replay_comes_once(
    node: Node, session: aiohttp.ClientSession, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live subscription opens before the replay is read: a change committed in between is in
    both, and the client gets it exactly once."""
    memory = await api.add("v1", user_id="alice")
    read_replay = feed_module._EventStream._changed_since

    async def write_then_read(stream: Any, after: int) -> AsyncIterator[Memory]:
        await node.replica.update(memory["id"], content="v2")  # committed and published: queued live
        await node.replica.add("new", user_id="alice")
        async for changed in read_replay(stream, after):
            yield changed

    monkeypatch.setattr(feed_module._EventStream, "_changed_since", write_then_read)
    async with open_sse(session, node, ACME, last_event_id=f"a:{memory['version']}") as response:
        sse = Sse(response)
        replay = await sse.events(2)
        assert [m["data"]["memory"]["content"] for m in replay] == ["v2", "new"]
        await sse.quiet()
        await api.patch(memory["id"], content="v3")
        assert (await sse.event())["data"]["memory"]["content"] == "v3"


# -- backpressure, disconnects, shutdown ---------------------------------------------------------


async def flood(node: Node, count: int) -> list[MemoryEvent]:
    """Publish ``count`` events at once, faster than any stream can take them."""
    memory = await node.replica.add("flood", user_id="alice")
    base = memory.version
    events = [
        MemoryEvent(
            f"a:{base + i}",
            "update",
            "2024-01-01T00:00:00.000Z",
            dataclasses.replace(memory, version=base + i),
            memory.source,
            memory.channels,
            "a",
        )
        for i in range(1, count + 1)
    ]
    node.replica.feed.publish(events)
    return events


async def test_sse_overflow_tells_the_client_to_resume(
    node: Node, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "MAX_QUEUE", 3)
    async with open_sse(session, node, ACME) as response:
        sse = Sse(response)
        await node.replica.add("before", user_id="alice")
        before = await sse.event()
        await flood(node, 20)
        got = []
        while (message := await sse.event())["event"] != "overflow":
            got.append(message)
        assert 1 <= len(got) <= 4
        overflow = message["data"]
        assert overflow["error"] == "FeedOverflow" and "Last-Event-ID" in overflow["message"]
        assert overflow["last_event_id"] == (got[-1]["id"] if got else before["id"])
        assert "id" not in message  # the client's Last-Event-ID stays the last real event
        assert await sse.message() is None  # and the stream ends
    assert await _eventually(lambda: len(node.replica.feed) == 0)


async def test_ws_overflow_closes_with_1013(
    node: Node, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "MAX_QUEUE", 3)
    async with session.ws_connect(f"{node.url}/v1/events", headers=auth(ACME)) as ws:
        await node.replica.add("before", user_id="alice")
        assert (await ws.receive_json(timeout=TIMEOUT))["event_type"] == "create"
        await flood(node, 20)
        messages = []
        while True:
            message = await ws.receive(timeout=TIMEOUT)
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            messages.append(json.loads(message.data))
        assert messages[-1]["error"] == "FeedOverflow"
        assert messages[-1]["last_event_id"] == messages[-2]["event_id"]
        assert ws.close_code == 1013


async def test_client_disconnect_releases_the_subscription(
    node: Node, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed_module, "POLL_SECONDS", 0.05)
    async with open_sse(session, node, ACME) as response:
        await Sse(response).message()
        assert len(node.replica.feed) == 1
    assert await _eventually(lambda: len(node.replica.feed) == 0)
    async with session.ws_connect(f"{node.url}/v1/events", headers=auth(ACME)):
        assert await _eventually(lambda: len(node.replica.feed) == 1)
    assert await _eventually(lambda: len(node.replica.feed) == 0)


async def test_node_stops_promptly_with_open_streams(
    tmp_path: Path, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node ends its streams itself on stop: with the shutdown grace for requests in flight set
    to an hour, stop() returns only because no stream is left for the grace to wait for."""
    monkeypatch.setattr(node_module, "SHUTDOWN_GRACE_S", 3600.0)
    running = await Node(Replica(tmp_path / "s.db", replica_id="s"), tokens=TOKENS).start()
    async with (
        open_sse(session, running, ACME) as response,
        session.ws_connect(f"{running.url}/v1/events", headers=auth(ACME)) as ws,
    ):
        sse = Sse(response)
        await sse.message()
        await asyncio.wait_for(running.stop(), 120)  # a hang guard only: waiting on the grace takes 3600
        assert await sse.message() is None
        assert (await ws.receive(timeout=TIMEOUT)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


# -- WebSocket -----------------------------------------------------------------------------------


async def test_websocket_feed_and_resume(node: Node, session: aiohttp.ClientSession, api: Api) -> None:
    url = f"{node.url}/v1/events?channel={ALICE}"
    async with session.ws_connect(url, headers=auth(ACME)) as ws:
        memory = await api.add("hello", user_id="alice")
        await api.add("not for alice", user_id="bob")
        await api.patch(memory["id"], content="hello again")
        created = await ws.receive_json(timeout=TIMEOUT)
        updated = await ws.receive_json(timeout=TIMEOUT)
        assert (created["event_type"], created["memory"]["content"]) == ("create", "hello")
        assert (updated["event_type"], updated["memory"]["content"]) == ("update", "hello again")
        check_seed_schema({"id": created["event_id"], "event": created["event_type"], "data": created})

    await api.patch(memory["id"], content="while away")
    async with session.ws_connect(f"{url}&last_event_id={updated['event_id']}", headers=auth(ACME)) as ws:
        replayed = await ws.receive_json(timeout=TIMEOUT)
        assert (replayed["event_type"], replayed["memory"]["content"]) == ("update", "while away")
        await api.call("DELETE", f"/v1/memories/{memory['id']}")
        deleted = await ws.receive_json(timeout=TIMEOUT)
        assert deleted["event_type"] == "delete"
        assert int(deleted["event_id"].split(":")[1]) > int(replayed["event_id"].split(":")[1])


async def test_websocket_token_in_query(node: Node, session: aiohttp.ClientSession, api: Api) -> None:
    async with session.ws_connect(f"{node.url}/v1/events?token={ACME}") as ws:
        await api.add("x", user_id="alice")
        assert (await ws.receive_json(timeout=TIMEOUT))["event_type"] == "create"


async def _eventually(check: Any, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_one_principal_runs_a_bounded_number_of_replays_at_once_and_others_do_not_wait() -> None:
    from crdtmem.server.feed import _Turns

    turns = _Turns(2)
    order: list[str] = []
    release = asyncio.Event()

    async def replay(key: str, name: str) -> None:
        async with turns.turn(key):
            order.append(f"{name} starts")
            await release.wait()
            order.append(f"{name} ends")

    mallory = [asyncio.ensure_future(replay("user:mallory", f"m{i}")) for i in range(3)]
    await asyncio.sleep(0.01)
    bob = asyncio.ensure_future(replay("user:bob", "b"))
    await asyncio.sleep(0.01)
    assert order == ["m0 starts", "m1 starts", "b starts"]  # m2 waits its turn; bob does not
    release.set()
    await asyncio.gather(*mallory, bob)
    assert order.index("m2 starts") > order.index("m0 ends")
    assert not turns._gates  # nothing kept for principals with no stream
