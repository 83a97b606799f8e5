"""Every REST list pages with a cursor and says its total: memories, history, conflicts, search;
filters in mem0's grammar on lists and search; a long conversation's history stays small."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp

from crdtmem import Replica
from crdtmem.access import TokenTable
from crdtmem.index import IndexSettings
from crdtmem.server import Node

ADMIN = "admin-token-0123456789"
USERS = "users-reader-0123456789"  # reads user:*:memories by pattern
TOKENS = TokenTable.from_json(
    {
        "tokens": [
            {"token": ADMIN, "principal": "user:admin", "read": ["*"], "write": ["*"], "origins": ["*"]},
            {"token": USERS, "principal": "user:support", "read": ["user:*:memories"], "write": []},
        ]
    }
)


async def call(session: aiohttp.ClientSession, method: str, url: str, token: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.request(method, url, json=body, headers=headers) as response:
        return response.status, await response.json()


async def pages(session: aiohttp.ClientSession, url: str, token: str = ADMIN) -> list[dict[str, Any]]:
    """Every page of a GET list, following next_cursor."""
    found = []
    cursor = None
    while True:
        sep = "&" if "?" in url else "?"
        status, body = await call(session, "GET", url + (f"{sep}cursor={cursor}" if cursor else ""), token)
        assert status == 200, body
        found.append(body)
        cursor = body["next_cursor"]
        if cursor is None:
            return found


async def test_memories_page_with_cursor_total_and_filters(tmp_path: Path) -> None:
    replica = Replica(tmp_path / "a.db", replica_id="a")
    async with Node(replica, tokens=TOKENS) as node, aiohttp.ClientSession() as session:
        for n in range(25):
            await replica.add(f"note {n}", user_id=f"u{n % 2}", metadata={"n": n, "even": n % 2 == 0})
        for n in range(3):
            await replica.add(f"team note {n}", tenant_id="acme")
        listed = await pages(session, f"{node.url}/v1/memories?limit=10")
        assert [p["count"] for p in listed] == [10, 10, 8] and {p["total"] for p in listed} == {28}
        ids = [m["id"] for p in listed for m in p["memories"]]
        assert len(ids) == len(set(ids)) == 28
        versions = [m["version"] for p in listed for m in p["memories"]]
        assert versions == sorted(versions, reverse=True)

        where = urllib.parse.quote(json.dumps({"n": {"gte": 10}, "OR": [{"even": True}, {"n": 11}]}))
        filtered = await pages(session, f"{node.url}/v1/memories?limit=4&filters={where}")
        contents = sorted(m["content"] for p in filtered for m in p["memories"])
        assert contents == sorted(["note 11", *(f"note {n}" for n in range(10, 25, 2))])
        assert filtered[0]["total"] == len(contents) == 9

        # a wildcard grant: the store keeps what the token may read, before the limit
        readable = await pages(session, f"{node.url}/v1/memories?limit=7", USERS)
        assert sum(p["count"] for p in readable) == readable[0]["total"] == 25

        status, body = await call(session, "GET", f"{node.url}/v1/memories?cursor=o5", ADMIN)
        assert status == 400 and "cursor" in body["message"]
        status, body = await call(session, "GET", f"{node.url}/v1/memories?filters=%7Bnope", ADMIN)
        assert status == 400 and "filters" in body["message"]
        status, body = await call(
            session,
            "GET",
            f"{node.url}/v1/memories?filters=" + urllib.parse.quote('{"x": {"bad": 1}}'),
            ADMIN,
        )
        assert status == 400 and "operator" in body["message"]


async def test_a_long_conversation_history_is_paged_and_small(tmp_path: Path) -> None:
    replica = Replica(tmp_path / "a.db", replica_id="a")
    async with Node(replica, tokens=TOKENS) as node, aiohttp.ClientSession() as session:
        chat = await replica.add([], kind="conversation", user_id="u1")
        for n in range(400):
            await replica.append_message(
                chat.id, role="user" if n % 2 else "assistant", text=f"message {n} " + "x" * 200
            )
        listed = await pages(session, f"{node.url}/v1/memories/{chat.id}/history?limit=100")
        assert [p["count"] for p in listed] == [100, 100, 100, 100, 1] and listed[0]["total"] == 401
        size = sum(len(json.dumps(p)) for p in listed)
        assert size < 200_000, size  # each message once, not once per later change
        messages: list[dict[str, Any]] = []
        for entry in (e for p in listed for e in p["history"]):
            assert entry.get("content_from", 0) == len(messages)
            messages.extend(entry["content"])
        assert messages == (await replica.get(chat.id)).content

        fact = await replica.add("v0", user_id="u1")
        for n in range(1, 5):
            await replica.update(fact.id, content=f"v{n}")
        shown = await pages(session, f"{node.url}/v1/memories/{fact.id}/history?limit=2")
        assert [e["content"] for p in shown for e in p["history"]] == ["v0", "v1", "v2", "v3", "v4"]
        assert all("content_from" not in e for p in shown for e in p["history"])


async def test_conflicts_page(tmp_path: Path) -> None:
    a = Replica(tmp_path / "a.db", replica_id="a")
    async with (
        Node(a, tokens=TOKENS) as node,
        Replica(None, replica_id="b") as b,
        aiohttp.ClientSession() as session,
    ):
        channel = "user:u1:memories"
        ids = [(await a.add(f"fact {n}", user_id="u1")).id for n in range(5)]
        await b.apply(await a.export_since(channel, b.version_vector(channel)))
        for memory_id in ids:
            await a.update(memory_id, content="from a")
            await b.update(memory_id, content="from b")
        await a.apply(await b.export_since(channel, a.version_vector(channel)))
        listed = await pages(session, f"{node.url}/v1/conflicts?limit=2")
        assert [p["count"] for p in listed] == [2, 2, 1] and listed[0]["total"] == 5
        assert sorted(c["memory_id"] for p in listed for c in p["conflicts"]) == sorted(ids)


async def test_search_pages_scores_and_cut_off(tmp_path: Path) -> None:
    replica = Replica(tmp_path / "a.db", replica_id="a", index=IndexSettings(engine="memory"))
    async with Node(replica, tokens=TOKENS) as node, aiohttp.ClientSession() as session:
        for n in range(12):
            await replica.add(f"green tea note {n}", user_id="u1", metadata={"n": n})
        await replica.add("the quarterly tax report", user_id="u1")
        assert replica.index is not None
        await replica.index.wait_idle()

        async def search(body: dict[str, Any], token: str = ADMIN) -> Any:
            status, answer = await call(session, "POST", f"{node.url}/v1/search", token, body)
            assert status == 200, answer
            return answer

        first = await search({"query": "green tea", "user_id": "u1", "limit": 5})
        assert first["count"] == 5 and first["total"] == 12 and first["next_cursor"]
        assert first["lexical"] is True and first["model"].startswith("crdtmem/hashing")
        seen = [r["memory"]["content"] for r in first["results"]]
        cursor = first["next_cursor"]
        while cursor:
            more = await search({"query": "green tea", "user_id": "u1", "limit": 5, "cursor": cursor})
            seen += [r["memory"]["content"] for r in more["results"]]
            cursor = more["next_cursor"]
        assert sorted(seen) == sorted(f"green tea note {n}" for n in range(12))  # not the tax report

        unrelated = await search({"query": "volcano eruption", "user_id": "u1"})
        assert unrelated["results"] == [] and unrelated["total"] == 0
        every = await search({"query": "volcano eruption", "user_id": "u1", "threshold": -1, "limit": 20})
        assert every["total"] == 13
        loose = await search({"query": "green tea note 3", "user_id": "u1", "limit": 20})
        cut = (loose["results"][0]["score"] + loose["results"][1]["score"]) / 2
        high = await search({"query": "green tea note 3", "user_id": "u1", "threshold": cut})
        assert [r["memory"]["content"] for r in high["results"]] == ["green tea note 3"]
        assert high["total"] == 1
        few = await search({"query": "green tea", "filters": {"user_id": "u1", "n": {"lt": 3}}})
        assert sorted(r["memory"]["metadata"]["n"] for r in few["results"]) == [0, 1, 2] and few["total"] == 3
        by_pattern = await search({"query": "green tea", "limit": 3}, USERS)
        assert by_pattern["total"] == 12 and by_pattern["count"] == 3
        status, body = await call(
            session, "POST", f"{node.url}/v1/search", ADMIN, {"query": "x", "threshold": 2}
        )
        assert status == 400 and "threshold" in body["message"]
