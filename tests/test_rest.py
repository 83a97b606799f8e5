"""The REST API against a real node: every endpoint, bad input, auth, tenant isolation, rate limits."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from crdtmem import InvalidInput, Replica
from crdtmem.access import TokenTable
from crdtmem.server import Node

# app.py stores the principal under a str key, which aiohttp >= 3.14 warns about once per process
# (see the report: the fix is a web.RequestKey in auth.py).

DEEP: Any = json.loads("[" * 70 + "]" * 70)  # lists nested past the 64 levels values may have
ADMIN = "admin-token-0123456789"
ACME = "acme-token-0123456789"  # tenant A: acme's shared channel and alice's memories
GLOBEX = "globex-token-0123456789"  # tenant B: globex's shared channel and bob's memories
ACME_READER = "acme-reader-0123456789"  # may read acme's shared channel, write nothing
USERS_READER = "users-reader-0123456789"  # reads every user:*:memories channel by pattern

TOKENS = TokenTable.from_json(
    {
        "tokens": [
            {"token": ADMIN, "principal": "user:admin", "read": ["*"], "write": ["*"], "origins": ["*"]},
            {
                "token": ACME,
                "principal": "user:acme-agent",
                "read": ["tenant:acme:shared", "user:alice:memories"],
                "write": ["tenant:acme:shared", "user:alice:memories"],
            },
            {
                "token": GLOBEX,
                "principal": "user:globex-agent",
                "read": ["tenant:globex:shared", "user:bob:memories"],
                "write": ["tenant:globex:shared", "user:bob:memories"],
            },
            {
                "token": ACME_READER,
                "principal": "user:acme-dash",
                "read": ["tenant:acme:shared"],
                "write": [],
            },
            {"token": USERS_READER, "principal": "user:support", "read": ["user:*:memories"], "write": []},
        ]
    }
)


class Client:
    """JSON calls to one node as one token; returns (status, body, headers)."""

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str | None):
        self.session = session
        self.url = url
        self.token = token

    async def call(
        self, method: str, path: str, body: Any = None, *, raw: bytes | None = None
    ) -> tuple[int, Any, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        kwargs: dict[str, Any] = {"headers": headers}
        if raw is not None:
            kwargs["data"] = raw
            headers["Content-Type"] = "application/json"
        elif body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.url + path, **kwargs) as response:
            data = await response.json() if response.content_type == "application/json" else None
            return response.status, data, response.headers

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        got, data, _ = await self.call(method, path, body)
        assert got == status, f"{method} {path}: {got} {data}"
        return data

    async def error(
        self, method: str, path: str, body: Any = None, *, status: int, raw: bytes | None = None
    ) -> dict[str, Any]:
        got, data, _ = await self.call(method, path, body, raw=raw)
        assert got == status, f"{method} {path}: expected {status}, got {got} {data}"
        named = {"limit", "max"} if data.get("error") == "LimitExceeded" else set()  # the bound passed
        assert set(data) == {"error", "message"} | named and data["message"], data
        return dict(data)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with Node(Replica(tmp_path / "a.db", replica_id="a"), tokens=TOKENS) as running:
        yield running


@pytest.fixture
def admin(node: Node, session: aiohttp.ClientSession) -> Client:
    return Client(session, node.url, ADMIN)


@pytest.fixture
def acme(node: Node, session: aiohttp.ClientSession) -> Client:
    return Client(session, node.url, ACME)


@pytest.fixture
def globex(node: Node, session: aiohttp.ClientSession) -> Client:
    return Client(session, node.url, GLOBEX)


async def make_conflict(node: Node, client: Client, memory_id: str) -> None:
    """Write the memory's content concurrently on this node and on a second replica, then push the
    second replica's change through /v1/sync/push: a content conflict."""
    channels = list((await node.replica.get(memory_id)).channels)
    async with Replica(replica_id="b") as other:
        await other.apply(await node.replica.export_since(channels))
        await other.update(memory_id, content="from b")
        await client.ok("PATCH", f"/v1/memories/{memory_id}", {"content": "from a"})
        payload = await other.export_since(channels, node.replica.version_vectors(channels))
    async with client.session.post(
        node.url + "/v1/sync/push", data=payload, headers={"Authorization": f"Bearer {ADMIN}"}
    ) as response:
        assert response.status == 200, await response.text()


# -- happy paths ---------------------------------------------------------------------------------


async def test_create_and_get_a_fact(acme: Client) -> None:
    created = await acme.ok(
        "POST",
        "/v1/memories",
        {
            "content": "Alice prefers dark mode",
            "kind": "preference",
            "user_id": "alice",
            "agent_id": "phone",
            "session_id": "s1",
            "tenant_id": "acme",
            "topics": [],
            "shared": True,
            "metadata": {"confidence": 0.9},
            "tags": ["ui"],
        },
        status=201,
    )
    assert created["content"] == "Alice prefers dark mode"
    assert created["kind"] == "preference"
    assert created["channels"] == ["tenant:acme:shared", "user:alice:memories"]
    assert created["source"] == {"agent_id": "phone", "session_id": "s1", "user_id": "alice"}
    assert created["metadata"] == {"confidence": 0.9} and created["tags"] == ["ui"]
    assert created["version"] >= 1 and not created["deleted"]
    assert await acme.ok("GET", f"/v1/memories/{created['id']}") == created
    status, again, headers = await acme.call("POST", "/v1/memories", {"content": "x", "user_id": "alice"})
    assert status == 201 and headers["Location"] == f"/v1/memories/{again['id']}"


async def test_patch_a_fact(acme: Client) -> None:
    memory = await acme.ok(
        "POST",
        "/v1/memories",
        {"content": "v1", "user_id": "alice", "metadata": {"a": 1, "b": 2}, "tags": ["x", "y"]},
        status=201,
    )
    changed = await acme.ok(
        "PATCH",
        f"/v1/memories/{memory['id']}",
        {
            "content": "v2",
            "metadata": {"c": 3},
            "remove_metadata": ["a"],
            "add_tags": ["z"],
            "remove_tags": ["x"],
        },
    )
    assert changed["content"] == "v2"
    assert changed["metadata"] == {"b": 2, "c": 3}
    assert changed["tags"] == ["y", "z"]
    assert changed["version"] > memory["version"]


async def test_patch_counter_list_and_conversation(acme: Client) -> None:
    counter = await acme.ok(
        "POST", "/v1/memories", {"kind": "counter", "content": 2, "user_id": "alice"}, 201
    )
    counter = await acme.ok("PATCH", f"/v1/memories/{counter['id']}", {"increment": 5})
    counter = await acme.ok("PATCH", f"/v1/memories/{counter['id']}", {"increment": -3})
    assert counter["content"] == 4

    items = await acme.ok("POST", "/v1/memories", {"kind": "list", "content": ["a"], "user_id": "alice"}, 201)
    items = await acme.ok(
        "PATCH", f"/v1/memories/{items['id']}", {"add_items": ["b", "c"], "remove_items": ["a"]}
    )
    assert items["content"] == ["b", "c"]

    chat = await acme.ok("POST", "/v1/memories", {"kind": "conversation", "user_id": "alice"}, 201)
    chat = await acme.ok(
        "PATCH",
        f"/v1/memories/{chat['id']}",
        {"append_message": {"role": "user", "text": "hi"}, "metadata": {"lang": "en"}},
    )
    assert [(m["role"], m["text"]) for m in chat["content"]] == [("user", "hi")]
    assert chat["metadata"] == {"lang": "en"}


async def test_delete_then_list_and_get(acme: Client) -> None:
    keep = await acme.ok("POST", "/v1/memories", {"content": "keep", "user_id": "alice"}, 201)
    gone = await acme.ok("POST", "/v1/memories", {"content": "gone", "user_id": "alice"}, 201)
    deleted = await acme.ok("DELETE", f"/v1/memories/{gone['id']}")
    assert deleted["deleted"] is True
    assert (await acme.ok("GET", f"/v1/memories/{gone['id']}"))["deleted"] is True
    listed = await acme.ok("GET", "/v1/memories")
    assert [m["id"] for m in listed["memories"]] == [keep["id"]] and listed["count"] == 1
    everything = await acme.ok("GET", "/v1/memories?include_deleted=true")
    assert [m["id"] for m in everything["memories"]] == [gone["id"], keep["id"]]
    refused = await acme.error("PATCH", f"/v1/memories/{gone['id']}", {"content": "back"}, status=409)
    assert refused["error"] == "MemoryDeleted"


async def test_json_values_as_fact_content(acme: Client) -> None:
    value = {"city": "Lisbon", "since": 2019, "pets": ["cat"], "verified": True, "note": None}
    memory = await acme.ok("POST", "/v1/memories", {"content": value, "user_id": "alice"}, 201)
    assert memory["content"] == value
    assert (await acme.ok("GET", f"/v1/memories/{memory['id']}"))["content"] == value
    for content in ([1, "two", {"three": 3}], 7.5, False, None, "text again"):
        changed = await acme.ok("PATCH", f"/v1/memories/{memory['id']}", {"content": content})
        assert changed["content"] == content
    kept = await acme.ok("PATCH", f"/v1/memories/{memory['id']}", {"add_tags": ["t"]})
    assert kept["content"] == "text again"  # no content field: the content stays
    history = await acme.ok("GET", f"/v1/memories/{memory['id']}/history")
    assert [h["content"] for h in history["history"]][:2] == [value, [1, "two", {"three": 3}]]


async def test_a_chosen_id_is_created_refused_while_live_and_revived_after_delete(
    acme: Client, globex: Client
) -> None:
    body = {"id": "prefs/alice:theme", "content": {"theme": "dark"}, "user_id": "alice", "tags": ["ui"]}
    first = await acme.ok("POST", "/v1/memories", body, 201)
    assert first["id"] == "prefs/alice:theme"
    assert (await acme.ok("GET", "/v1/memories/prefs%2Falice%3Atheme"))["content"] == {"theme": "dark"}
    taken = await acme.error("POST", "/v1/memories", body, status=409)
    assert taken["error"] == "MemoryExists"
    await acme.ok("DELETE", "/v1/memories/prefs%2Falice%3Atheme")
    revived = await acme.ok("POST", "/v1/memories", {**body, "content": {"theme": "light"}, "tags": []}, 201)
    assert revived["content"] == {"theme": "light"} and revived["tags"] == [] and not revived["conflicted"]
    # another tenant learns that the id is taken, and nothing about the memory behind it
    other = await globex.error("POST", "/v1/memories", {**body, "user_id": "bob"}, status=409)
    assert other["error"] == "MemoryExists" and "alice" not in other["message"].replace(body["id"], "")
    moved = await acme.error(
        "POST", "/v1/memories", {**body, "user_id": "alice", "tenant_id": "acme"}, status=409
    )
    assert moved["error"] == "MemoryExists"


async def test_list_filters(admin: Client) -> None:
    a = await admin.ok(
        "POST", "/v1/memories", {"content": "a", "user_id": "alice", "topics": ["billing"]}, 201
    )
    b = await admin.ok("POST", "/v1/memories", {"content": "b", "user_id": "bob", "tenant_id": "globex"}, 201)
    c = await admin.ok("POST", "/v1/memories", {"kind": "counter", "tenant_id": "acme"}, 201)

    async def ids(query: str) -> list[str]:
        return [m["id"] for m in (await admin.ok("GET", f"/v1/memories{query}"))["memories"]]

    assert await ids("") == [c["id"], b["id"], a["id"]]
    assert await ids("?user_id=alice") == [a["id"]]
    assert await ids("?tenant_id=globex") == [b["id"]]
    assert await ids("?topic=billing") == [a["id"]]
    assert await ids("?kind=counter") == [c["id"]]
    assert await ids("?limit=2") == [c["id"], b["id"]]
    assert await ids("?user_id=alice&kind=counter") == []


async def test_history(acme: Client) -> None:
    memory = await acme.ok("POST", "/v1/memories", {"content": "v1", "user_id": "alice"}, 201)
    await acme.ok("PATCH", f"/v1/memories/{memory['id']}", {"content": "v2"})
    await acme.ok("DELETE", f"/v1/memories/{memory['id']}")
    history = await acme.ok("GET", f"/v1/memories/{memory['id']}/history")
    assert history["memory_id"] == memory["id"]
    assert [(h["content"], h["deleted"]) for h in history["history"]] == [
        ("v1", False),
        ("v2", False),
        ("v2", True),
    ]
    assert {h["origin"] for h in history["history"]} == {"a"}


async def test_conflicts_and_resolve(node: Node, acme: Client) -> None:
    memory = await acme.ok(
        "POST", "/v1/memories", {"content": "v1", "user_id": "alice", "tenant_id": "acme"}, 201
    )
    await make_conflict(node, acme, memory["id"])
    assert (await acme.ok("GET", f"/v1/memories/{memory['id']}"))["conflicts"] == ["content"]

    listed = (await acme.ok("GET", "/v1/conflicts"))["conflicts"]
    assert [(c["memory_id"], c["field"]) for c in listed] == [(memory["id"], "content")]
    assert sorted(v["value"] for v in listed[0]["values"]) == ["from a", "from b"]
    assert listed[0]["user_id"] == "alice" and listed[0]["tenant_id"] == "acme"
    for query in (f"?memory_id={memory['id']}", "?user_id=alice", "?tenant_id=acme"):
        assert (await acme.ok("GET", f"/v1/conflicts{query}"))["conflicts"] == listed
    assert (await acme.ok("GET", "/v1/conflicts?user_id=bob"))["conflicts"] == []

    resolved = await acme.ok(
        "POST", f"/v1/memories/{memory['id']}/resolve", {"field": "content", "value": "both"}
    )
    assert resolved["content"] == "both" and not resolved["conflicted"]
    assert (await acme.ok("GET", "/v1/conflicts"))["conflicts"] == []
    again = await acme.error(
        "POST", f"/v1/memories/{memory['id']}/resolve", {"field": "content", "value": "x"}, status=409
    )
    assert again["error"] == "NoSuchConflict"


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"content": "x", "colour": "red"}, "unknown field(s) 'colour'"),
        ({"content": "x", "kind": 5}, "kind"),
        ({"content": "x", "kind": "opinion"}, "kind"),
        ({"content": "x", "topics": "billing"}, "'topics' must be an array"),
        ({"content": "x", "topics": [1]}, "topics[]"),
        ({"content": "x", "shared": "yes"}, "'shared' must be true or false"),
        ({"content": "x", "metadata": []}, "'metadata' must be an object"),
        ({"content": "x", "tags": "t"}, "'tags' must be an array"),
        ({"content": "x", "user_id": 7}, "'user_id' must be a string"),
        ({"content": "x", "user_id": "no\nnewlines"}, "user_id"),
        ({"content": "x", "user_id": "u" * 257}, "user_id"),
        ({"kind": "fact", "user_id": "alice"}, "needs content"),
        ({"content": {"x": DEEP}, "user_id": "alice"}, "64 deep"),
        ({"content": "x", "id": ".", "user_id": "alice"}, "path"),
        ({"kind": "counter", "content": "many", "user_id": "alice"}, "counter content must be an int"),
        ([1, 2], "must be a JSON object, got array"),
    ],
)
async def test_create_refuses_bad_bodies(node: Node, acme: Client, body: Any, needle: str) -> None:
    error = await acme.error("POST", "/v1/memories", body, status=400)
    assert needle in error["message"], error
    assert await node.replica.list(include_deleted=True) == []


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"", b"   ", b'{"content": NaN}', b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000],
)
async def test_malformed_json_is_400(node: Node, acme: Client, raw: bytes) -> None:
    error = await acme.error("POST", "/v1/memories", status=400, raw=raw)
    assert error["error"] == "InvalidInput"
    assert "JSON" in error["message"]


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("kind", "body", "needle"),
    [
        ("fact", {}, "nothing to change"),
        ("fact", {"content": {"x": DEEP}}, "64 deep"),
        ("fact", {"increment": 1}, "increment applies to counter"),
        ("fact", {"add_items": ["x"]}, "add_items applies to list"),
        ("counter", {"increment": "1"}, "'increment' must be an integer"),
        ("counter", {"increment": True}, "'increment' must be an integer"),
        ("counter", {"increment": 1, "content": "x"}, "content applies to fact and preference"),
        ("list", {"add_items": "x"}, "'add_items' must be an array"),
        ("conversation", {"append_message": {"role": "user"}}, "append_message"),
        ("conversation", {"append_message": {"role": "", "text": "t"}}, "must not be empty"),
        (
            "conversation",
            {"append_message": {"role": 1, "text": "t"}},
            "'append_message.role' must be a string",
        ),
        ("fact", {"remove_metadata": "a"}, "'remove_metadata' must be an array"),
        ("fact", {"sparkle": 1}, "unknown field(s) 'sparkle'"),
        # one write: a good change before a refused one is not kept either
        ("list", {"add_items": ["kept?"], "remove_items": ["\ud800"]}, "UTF-8"),
        ("fact", {"content": "kept?", "metadata": {"deep": _nested(100)}}, "at most 64 deep"),
        ("list", {"add_items": ["kept?", _nested(500)]}, "at most 64 deep"),
    ],
)
async def test_patch_refuses_bad_bodies_and_changes_nothing(
    acme: Client, kind: str, body: Any, needle: str
) -> None:
    content = "x" if kind == "fact" else None
    memory = await acme.ok(
        "POST", "/v1/memories", {"kind": kind, "content": content, "user_id": "alice"}, 201
    )
    error = await acme.error("PATCH", f"/v1/memories/{memory['id']}", body, status=400)
    assert needle in error["message"], error
    assert await acme.ok("GET", f"/v1/memories/{memory['id']}") == memory


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("/v1/memories?limit=abc", "'limit' must be an integer"),
        ("/v1/memories?limit=0", "between 1 and 1000"),
        ("/v1/memories?include_deleted=maybe", "true or false"),
        ("/v1/memories?kind=opinion", "kind must be one of"),
        ("/v1/memories?user=alice", "unknown query parameter 'user'"),
        ("/v1/memories?user_id=a&user_id=b", "more than once"),
        ("/v1/memories?user_id=a%0Ab", "user_id"),
        ("/v1/conflicts?memory=x", "unknown query parameter 'memory'"),
        ("/v1/memories/bad%09id", "memory id"),
    ],
)
async def test_bad_queries_are_400(acme: Client, path: str, needle: str) -> None:
    error = await acme.error("GET", path, status=400)
    assert needle in error["message"], error


async def test_resolve_needs_field_and_value(acme: Client) -> None:
    memory = await acme.ok("POST", "/v1/memories", {"content": "x", "user_id": "alice"}, 201)
    path = f"/v1/memories/{memory['id']}/resolve"
    assert (
        "missing field(s) 'value'"
        in (await acme.error("POST", path, {"field": "content"}, status=400))["message"]
    )
    assert (
        "'field' must be a string"
        in (await acme.error("POST", path, {"field": 1, "value": "x"}, status=400))["message"]
    )


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("GET", "", None),
        ("PATCH", "", {"content": "x"}),
        ("DELETE", "", None),
        ("GET", "/history", None),
        ("POST", "/resolve", {"field": "content", "value": "x"}),
    ],
)
async def test_unknown_id_is_404(admin: Client, method: str, suffix: str, body: Any) -> None:
    error = await admin.error(method, f"/v1/memories/nope{suffix}", body, status=404)
    assert error["error"] == "NotFound"
    assert "nope" in error["message"]


# -- authentication and authorization ------------------------------------------------------------

ENDPOINTS = [
    ("POST", "/v1/memories", {"content": "x"}),
    ("GET", "/v1/memories", None),
    ("GET", "/v1/memories/{id}", None),
    ("PATCH", "/v1/memories/{id}", {"content": "y"}),
    ("DELETE", "/v1/memories/{id}", None),
    ("GET", "/v1/memories/{id}/history", None),
    ("POST", "/v1/memories/{id}/resolve", {"field": "content", "value": "x"}),
    ("GET", "/v1/conflicts", None),
    ("GET", "/v1/events", None),
    ("GET", "/v1/status", None),
    ("GET", "/metrics", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
@pytest.mark.parametrize("token", [None, "wrong-token-0123456789", ""])
async def test_missing_or_wrong_token_is_401(
    node: Node,
    session: aiohttp.ClientSession,
    admin: Client,
    method: str,
    path: str,
    body: Any,
    token: str | None,
) -> None:
    memory = await admin.ok("POST", "/v1/memories", {"content": "x", "user_id": "alice"}, 201)
    status, data, headers = await Client(session, node.url, token).call(
        method, path.replace("{id}", memory["id"]), body
    )
    assert status == 401, data
    assert data["error"] == "Unauthorized" and headers["WWW-Authenticate"] == "Bearer"
    assert await node.replica.list() == [await node.replica.get(memory["id"])]


async def test_token_in_query_string_is_accepted(node: Node, session: aiohttp.ClientSession) -> None:
    status, data, _ = await Client(session, node.url, None).call("GET", f"/v1/memories?token={ACME}")
    assert status == 200 and data == {"memories": [], "count": 0, "total": 0, "next_cursor": None}


async def test_tenant_isolation(node: Node, acme: Client, globex: Client) -> None:
    """An acme token cannot read, list, change, delete, resolve or create globex data."""
    theirs = await globex.ok(
        "POST",
        "/v1/memories",
        {"content": "globex secret", "user_id": "bob", "tenant_id": "globex", "shared": True},
        201,
    )
    await make_conflict(node, globex, theirs["id"])
    before = await node.replica.get(theirs["id"])
    path = f"/v1/memories/{theirs['id']}"

    missing = await acme.error("GET", "/v1/memories/nope", status=404)
    for method, suffix, body in [
        ("GET", "", None),
        ("GET", "/history", None),
        ("PATCH", "", {"content": "pwned"}),
        ("DELETE", "", None),
        ("POST", "/resolve", {"field": "content", "value": "pwned"}),
    ]:
        error = await acme.error(method, path + suffix, body, status=404)
        # word for word what a missing id answers: the id's existence does not leak
        assert error["message"] == missing["message"].replace("'nope'", repr(theirs["id"]))

    for query in ("", "?tenant_id=globex", "?user_id=bob", "?include_deleted=true"):
        assert (await acme.ok("GET", f"/v1/memories{query}"))["memories"] == []
    for query in ("", "?tenant_id=globex", f"?memory_id={theirs['id']}"):
        status, data, _ = await acme.call("GET", f"/v1/conflicts{query}")
        assert status in (200, 404) and data.get("conflicts", []) == []

    for scope in ({"tenant_id": "globex"}, {"user_id": "bob"}, {"user_id": "alice", "topics": ["t"]}, {}):
        error = await acme.error("POST", "/v1/memories", {"content": "x", **scope}, status=403)
        assert error["error"] == "AccessDenied"

    assert await node.replica.get(theirs["id"]) == before
    assert [m.id for m in await node.replica.list(include_deleted=True)] == [theirs["id"]]


async def test_readable_but_not_writable_is_403(
    node: Node, session: aiohttp.ClientSession, acme: Client
) -> None:
    memory = await acme.ok("POST", "/v1/memories", {"content": "x", "tenant_id": "acme"}, 201)
    await make_conflict(node, acme, memory["id"])
    before = await node.replica.get(memory["id"])
    reader = Client(session, node.url, ACME_READER)
    assert (await reader.ok("GET", f"/v1/memories/{memory['id']}"))["id"] == memory["id"]
    assert len((await reader.ok("GET", "/v1/conflicts"))["conflicts"]) == 1
    for method, suffix, body in [
        ("PATCH", "", {"content": "no"}),
        ("DELETE", "", None),
        ("POST", "/resolve", {"field": "content", "value": "no"}),
    ]:
        error = await reader.error(method, f"/v1/memories/{memory['id']}{suffix}", body, status=403)
        assert "may not write tenant:acme:shared" in error["message"]
    assert await node.replica.get(memory["id"]) == before


async def test_write_needs_every_channel(acme: Client) -> None:
    """alice's memory shared with globex lands on a channel acme may not write."""
    error = await acme.error(
        "POST",
        "/v1/memories",
        {"content": "x", "user_id": "alice", "tenant_id": "globex", "shared": True},
        status=403,
    )
    assert "tenant:globex:shared" in error["message"] and "user:alice" not in error["message"]


async def test_pattern_reader_lists_only_matching(
    admin: Client, node: Node, session: aiohttp.ClientSession
) -> None:
    mine = await admin.ok("POST", "/v1/memories", {"content": "u", "user_id": "carol"}, 201)
    await admin.ok("POST", "/v1/memories", {"content": "t", "tenant_id": "acme"}, 201)
    await admin.ok("POST", "/v1/memories", {"content": "g"}, 201)
    listed = await Client(session, node.url, USERS_READER).ok("GET", "/v1/memories?limit=1")
    assert [m["id"] for m in listed["memories"]] == [mine["id"]]


# -- rate limits ---------------------------------------------------------------------------------


async def test_writes_over_the_rate_get_429_with_retry_after(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    replica = Replica(tmp_path / "r.db", replica_id="r")
    async with Node(replica, tokens=TOKENS, write_rate=0.5, write_burst=2) as limited:
        acme = Client(session, limited.url, ACME)
        first = await acme.ok("POST", "/v1/memories", {"content": "1", "user_id": "alice"}, 201)
        await acme.ok("PATCH", f"/v1/memories/{first['id']}", {"content": "2"})
        for method, path, body in [
            ("POST", "/v1/memories", {"content": "3", "user_id": "alice"}),
            ("PATCH", f"/v1/memories/{first['id']}", {"content": "3"}),
            ("DELETE", f"/v1/memories/{first['id']}", None),
            ("POST", f"/v1/memories/{first['id']}/resolve", {"field": "content", "value": "3"}),
        ]:
            status, data, headers = await acme.call(method, path, body)
            assert status == 429, data
            assert data["error"] == "RateLimited" and "retry" in data["message"]
            assert int(headers["Retry-After"]) >= 1
        # reads are not limited, and other principals have their own bucket
        assert (await acme.ok("GET", f"/v1/memories/{first['id']}"))["content"] == "2"
        await Client(session, limited.url, ADMIN).ok("POST", "/v1/memories", {"content": "x"}, 201)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "example.com"])
def test_an_open_node_refuses_to_bind_beyond_loopback(tmp_path: Path, host: str) -> None:
    """Without tokens, nothing but loopback: refused before anything binds or opens."""
    with pytest.raises(InvalidInput, match=f"refusing to serve on {host} without a tokens file"):
        Node(Replica(tmp_path / "o.db", replica_id="o"), host=host)
    assert not (tmp_path / "o.db").exists()
    Node(Replica(tmp_path / "t.db", replica_id="t"), host=host, tokens=TOKENS)  # with tokens: allowed


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_an_open_node_may_bind_to_loopback(tmp_path: Path, host: str) -> None:
    assert Node(Replica(tmp_path / "o.db", replica_id="o"), host=host).host == host


def test_serve_refuses_an_open_non_loopback_bind_with_a_clear_message(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "crdtmem", "serve", "--db", str(tmp_path / "o.db"), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and done.stdout == ""  # never printed that it serves
    assert "refusing to serve on 0.0.0.0 without a tokens file" in done.stderr


async def test_a_body_over_the_limit_is_413_and_changes_nothing(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    async with Node(Replica(tmp_path / "s.db", replica_id="s"), tokens=TOKENS, max_body_bytes=4096) as small:
        admin = Client(session, small.url, ADMIN)
        fits = await admin.ok("POST", "/v1/memories", {"content": "x" * 3000}, 201)
        error = await admin.error("POST", "/v1/memories", {"content": "x" * 5000}, status=413)
        assert "4096" in error["message"] and (error["limit"], error["max"]) == ("body_bytes", 4096), error
        big_payload = b"\x00" * 5000
        async with session.post(
            small.url + "/v1/sync/push", data=big_payload, headers={"Authorization": f"Bearer {ADMIN}"}
        ) as response:
            assert response.status == 413 and (await response.json())["message"]
        assert [m["id"] for m in (await admin.ok("GET", "/v1/memories"))["memories"]] == [fits["id"]]
        assert await admin.ok("GET", "/healthz")


async def test_open_node_without_tokens(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    async with Node(Replica(tmp_path / "o.db", replica_id="o")) as open_node:
        anyone = Client(session, open_node.url, None)
        memory = await anyone.ok("POST", "/v1/memories", {"content": "x", "tenant_id": "t1"}, 201)
        assert (await anyone.ok("GET", "/v1/memories"))["memories"] == [memory]


# -- hostile inputs found by probing a running node: a clear 4xx, nothing changed, still serving -----


async def test_hostile_headers_bodies_and_numbers_get_clear_errors(
    node: Node, session: aiohttp.ClientSession, admin: Client
) -> None:
    before = await admin.ok("GET", "/v1/memories")
    # a token with bytes no token has (the header is latin-1 on the wire)
    async with session.get(node.url + "/v1/memories", headers={"Authorization": "Bearer \xe9\xe9"}) as r:
        assert r.status == 401
    # a body that does not decode as the encoding it names (aiohttp then drops the connection, so
    # each on its own)
    for encoding in ("gzip", "deflate"):
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as alone,
            alone.post(
                node.url + "/v1/memories",
                data=b"\x1f\x8bnot gzip at all",
                headers={"Authorization": f"Bearer {ADMIN}", "Content-Encoding": encoding},
            ) as r,
        ):
            assert r.status == 400 and (await r.json())["error"] == "MalformedBody"
    # digits int() would take but a query parameter is not
    for limit in ("\u0663", " 3", "1_0", "9" * 40):
        error = await admin.error("GET", f"/v1/memories?limit={limit}", status=400)
        assert "limit" in error["message"]
    # a search body nested past any parser's patience, and one in a charset nobody knows
    deep = b'{"query": "x", "filters": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert "not valid JSON" in (await admin.error("POST", "/v1/search", raw=deep, status=400))["message"]
    async with session.post(
        node.url + "/v1/search",
        data=b'{"query": "x"}',
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json; charset=nope"},
    ) as r:
        assert r.status == 400 and "no index" in (await r.json())["message"]  # it read the body fine
    assert await admin.ok("GET", "/v1/memories") == before
    assert await admin.ok("GET", "/healthz")
