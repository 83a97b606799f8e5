"""``crdtmem mcp`` as an MCP client sees it: a real ``crdtmem mcp`` process, driven by the official SDK's
own client (ClientSession over stdio_client and over streamable_http_client), in front of a real node
with a tokens file. Every tool works, and each caller gets exactly its token's rights."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from crdtmem import Replica
from crdtmem.cli.mcp import require_token
from tests.support.processes import ServerProcess, _read_line
from tests.support.rest import Api

ROOT = Path(__file__).resolve().parent.parent
ALICE = "user:alice@example.com:memories"
ALICE_TOKEN = "alice-token-0000000001"
BOB_TOKEN = "bob-token-00000000000001"
ADMIN_TOKEN = "admin-token-0000000001"
DEVICE_TOKEN = "device-x-token-0000001"
TOOLS = {
    "add_memory",
    "search_memories",
    "get_memory",
    "list_memories",
    "update_memory",
    "delete_memory",
    "list_conflicts",
    "resolve_conflict",
    "memory_history",
}


@pytest.fixture
def node(tmp_path: Path) -> Iterator[ServerProcess]:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                "tokens": [
                    {
                        "token": ALICE_TOKEN,
                        "principal": "user:alice@example.com",
                        "read": [ALICE],
                        "write": [ALICE],
                    },
                    {
                        "token": BOB_TOKEN,
                        "principal": "user:bob",
                        "read": ["user:bob:memories"],
                        "write": ["user:bob:memories"],
                    },
                    {"token": ADMIN_TOKEN, "principal": "user:admin", "read": ["*"], "write": ["*"]},
                    {"token": DEVICE_TOKEN, "principal": "replica:x", "read": [ALICE], "write": [ALICE]},
                ]
            }
        )
    )
    proc = ServerProcess(tmp_path, "node", tokens=tokens, extra=["--index"]).start()
    yield proc
    proc.stop()


def _env(**extra: str) -> dict[str, str]:
    return {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **extra}


@asynccontextmanager
async def over_stdio(url: str, token: str) -> AsyncIterator[ClientSession]:
    """A session with a ``crdtmem mcp`` the SDK's stdio client spawns, as Claude Desktop would."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "crdtmem", "mcp", "--url", url],
        env=_env(CRDTMEM_TOKEN=token),
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def over_http(mcp_url: str, token: str | None) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with (
        create_mcp_http_client(headers=headers) as http,
        streamable_http_client(mcp_url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> Any:
    """The tool's structured result; an error result raises with its text."""
    result = await session.call_tool(tool, arguments)
    text = " ".join(getattr(block, "text", "") for block in result.content)
    if result.is_error:
        raise ToolFailed(text)
    return result.structured_content if result.structured_content is not None else json.loads(text)


class ToolFailed(Exception):
    pass


async def _searched(session: ClientSession, query: str, **filters: Any) -> list[dict[str, Any]]:
    """Search until the node's index has caught up with the writes just made."""
    results: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while not results:
            results = (await call(session, "search_memories", query=query, **filters))["results"]
            if not results:
                await asyncio.sleep(0.1)
    return results


async def test_every_tool_over_stdio_within_the_tokens_rights(node, tmp_path):
    async with aiohttp.ClientSession() as http:
        admin = Api(http, node.url, ADMIN_TOKEN)
        bobs = await admin.add("Bob drinks green tea at noon", user_id="bob")

        async with over_stdio(node.url, ALICE_TOKEN) as session:
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}
            assert set(tools) == TOOLS
            read_only = {
                name for name, tool in tools.items() if tool.annotations and tool.annotations.read_only_hint
            }
            assert read_only == {
                "search_memories",
                "get_memory",
                "list_memories",
                "list_conflicts",
                "memory_history",
            }
            destructive = {n for n, t in tools.items() if t.annotations and t.annotations.destructive_hint}
            assert destructive == {"delete_memory"}

            added = await call(
                session,
                "add_memory",
                content="Alice drinks green tea every morning",
                user_id="alice@example.com",
                tags=["drinks"],
            )
            assert added["channels"] == [ALICE] and "embedding" not in added
            assert (await admin.get(added["id"]))["content"] == "Alice drinks green tea every morning"
            prefs = await call(
                session,
                "add_memory",
                content={"theme": "dark"},
                kind="preference",
                user_id="alice@example.com",
            )
            assert prefs["content"] == {"theme": "dark"}

            # rights: bob's scope can be neither written nor read, nor found by search
            with pytest.raises(ToolFailed, match=r"403|AccessDenied|may not"):
                await call(session, "add_memory", content="sneaky", user_id="bob")
            with pytest.raises(ToolFailed, match=r"404|NotFound"):
                await call(session, "get_memory", memory_id=bobs["id"])
            with pytest.raises(ToolFailed, match=r"404|NotFound"):
                await call(session, "delete_memory", memory_id=bobs["id"])
            found = await _searched(session, "green tea")
            assert found[0]["memory"]["id"] == added["id"] and found[0]["score"] > 0
            assert {r["memory"]["id"] for r in found} <= {added["id"], prefs["id"]}  # never bob's
            listed = await call(session, "list_memories", user_id="bob")
            assert listed["memories"] == []
            assert {m["id"] for m in (await call(session, "list_memories"))["memories"]} == {
                added["id"],
                prefs["id"],
            }
            first = await call(session, "list_memories", limit=1)
            assert first["total"] == 2 and len(first["memories"]) == 1 and first["next_cursor"]
            rest = await call(session, "list_memories", limit=1, cursor=first["next_cursor"])
            assert rest["next_cursor"] is None
            assert {first["memories"][0]["id"], rest["memories"][0]["id"]} == {added["id"], prefs["id"]}

            got = await call(session, "get_memory", memory_id=added["id"])
            assert got["content"] == "Alice drinks green tea every morning"
            updated = await call(
                session,
                "update_memory",
                memory_id=added["id"],
                content="Alice drinks jasmine tea every morning",
                metadata={"source": "chat"},
                add_tags=["morning"],
            )
            assert updated["content"] == "Alice drinks jasmine tea every morning"
            assert updated["metadata"] == {"source": "chat"} and sorted(updated["tags"]) == [
                "drinks",
                "morning",
            ]
            history = await call(session, "memory_history", memory_id=added["id"], limit=1)
            assert history["total"] == 2 and history["next_cursor"]
            assert history["history"][0]["content"] == "Alice drinks green tea every morning"
            later = await call(
                session, "memory_history", memory_id=added["id"], cursor=history["next_cursor"]
            )
            assert [e["content"] for e in later["history"]] == ["Alice drinks jasmine tea every morning"]
            with pytest.raises(ToolFailed, match=r"404|NotFound"):
                await call(session, "memory_history", memory_id=bobs["id"])
            with pytest.raises(ToolFailed, match="append_role and append_text"):
                await call(session, "update_memory", memory_id=added["id"], append_role="user")

            # a conflict: a device (replica x) and the MCP client change one memory without seeing each other
            async with Replica(tmp_path / "x.db", replica_id="x") as device:
                shared = await device.add(
                    "tea", kind="preference", user_id="alice@example.com", memory_id="drink"
                )
                await _push(http, node.url, device)
                await device.update(shared.id, content="green tea")
                await call(session, "update_memory", memory_id="drink", content="coffee")
                await _push(http, node.url, device)
            conflicts = (await call(session, "list_conflicts", memory_id="drink"))["conflicts"]
            assert [c["field"] for c in conflicts] == ["content"]
            assert sorted(v["value"] for v in conflicts[0]["values"]) == ["coffee", "green tea"]
            assert (await call(session, "list_conflicts", user_id="alice@example.com"))[
                "conflicts"
            ] == conflicts
            resolved = await call(
                session, "resolve_conflict", memory_id="drink", field="content", value="coffee"
            )
            assert resolved["content"] == "coffee" and not resolved["conflicted"]
            assert (await call(session, "list_conflicts"))["conflicts"] == []

            deleted = await call(session, "delete_memory", memory_id=prefs["id"])
            assert deleted["deleted"] is True
            assert (await admin.get(prefs["id"]))["deleted"] is True  # type: ignore[index]
            assert (await admin.get(bobs["id"]))["deleted"] is False  # type: ignore[index]

        # a wrong token: every tool call fails, nothing is read
        async with over_stdio(node.url, "not-a-token-000000000") as session:
            with pytest.raises(ToolFailed, match=r"401|Unauthorized|token"):
                await call(session, "list_memories")


async def _push(http: aiohttp.ClientSession, url: str, device: Replica) -> None:
    payload = await device.export_since(ALICE, {})
    headers = {"Authorization": f"Bearer {DEVICE_TOKEN}"}
    async with http.post(f"{url}/v1/sync/push", data=payload, headers=headers) as response:
        assert response.status == 200, await response.text()


@pytest.fixture
def mcp_http(node: ServerProcess) -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "crdtmem", "mcp", "--transport", "http", "--port", "0", "--url", node.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **_env()},
    )
    try:
        line = _read_line(proc, 30)  # type: ignore[arg-type]
        yield json.loads(line)["url"]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


async def test_streamable_http_acts_with_each_requests_own_token(node, mcp_http):
    async with over_http(mcp_http, ALICE_TOKEN) as alice, over_http(mcp_http, BOB_TOKEN) as bob:
        assert {tool.name for tool in (await alice.list_tools()).tools} == TOOLS
        mine = await call(alice, "add_memory", content="Alice likes sailing", user_id="alice@example.com")
        theirs = await call(bob, "add_memory", content="Bob likes sailing", user_id="bob")
        assert (await call(alice, "get_memory", memory_id=mine["id"]))["content"] == "Alice likes sailing"
        with pytest.raises(ToolFailed, match=r"404|NotFound"):
            await call(alice, "get_memory", memory_id=theirs["id"])
        with pytest.raises(ToolFailed, match=r"404|NotFound"):
            await call(bob, "get_memory", memory_id=mine["id"])
        assert [r["memory"]["id"] for r in await _searched(bob, "sailing")] == [theirs["id"]]
        assert [r["memory"]["id"] for r in await _searched(alice, "sailing")] == [mine["id"]]  # only hers
    async with over_http(mcp_http, None) as anonymous:
        with pytest.raises(ToolFailed, match=r"401|Unauthorized"):
            await call(anonymous, "list_memories")


async def test_a_server_bound_beyond_loopback_refuses_requests_without_a_token():
    reached: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(scope)

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    guarded = require_token(app)
    await guarded({"type": "http", "headers": []}, receive, send)
    await guarded({"type": "http", "headers": [(b"authorization", b"Basic eDp5")]}, receive, send)
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [401, 401]
    assert reached == []
    await guarded({"type": "http", "headers": [(b"authorization", b"Bearer abc")]}, receive, send)
    assert len(reached) == 1


def test_without_the_extra_the_command_names_it(tmp_path):
    code = "import sys; sys.modules['mcp'] = None; from crdtmem.cli.main import main; sys.exit(main(['mcp']))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, **_env()},
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "crdtmem mcp: the MCP SDK (for crdtmem mcp) is not installed: pip install 'crdtmem[mcp]'"
    )


def _documented_configs() -> list[dict[str, Any]]:
    """The ``mcpServers`` entries docs/integrations.md shows, stdio first."""
    from tests.test_docs import FENCE

    text = (ROOT / "docs" / "integrations.md").read_text()
    blocks = [m.group(3) for m in FENCE.finditer(text) if m.group(1) == "json" and "mcpServers" in m.group(3)]
    return [json.loads(block)["mcpServers"]["crdtmem"] for block in blocks]


async def test_the_client_configs_in_the_docs_work_as_written(node, mcp_http):
    stdio_config, http_config = _documented_configs()
    assert "token" not in " ".join(stdio_config["args"])  # the token is never on the command line
    params = StdioServerParameters(
        command=str(Path(sys.executable).parent / stdio_config["command"]),
        args=[node.url if arg.startswith("http://") else arg for arg in stdio_config["args"]],
        env={**_env(), **stdio_config["env"], "CRDTMEM_TOKEN": ALICE_TOKEN},
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        added = await call(session, "add_memory", content="Alice reads sci-fi", user_id="alice@example.com")
        assert (await call(session, "get_memory", memory_id=added["id"]))["content"] == "Alice reads sci-fi"

    assert http_config["url"].endswith("/mcp") and http_config["headers"]["Authorization"].startswith(
        "Bearer "
    )
    headers = {**http_config["headers"], "Authorization": f"Bearer {ALICE_TOKEN}"}
    async with (
        create_mcp_http_client(headers=headers) as http,
        streamable_http_client(mcp_http, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert (await call(session, "get_memory", memory_id=added["id"]))["content"] == "Alice reads sci-fi"
