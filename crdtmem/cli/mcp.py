"""``crdtmem mcp``: a node's memories as Model Context Protocol tools (the official ``mcp`` SDK).

An MCP client (Claude Desktop, an IDE, an agent framework) starts ``crdtmem mcp`` and calls its tools;
each tool is one call to a running node's REST API, made with a bearer token, so the node decides
what the caller may read and write exactly as it decides for any REST client (crdtmem.access: a
memory is readable if any of its channels is, writable if all are; what a token may not read is
left out of searches and lists, and answers "not found"). The MCP server itself holds no data and
no rights of its own.

Tools::

    add_memory       a memory (any JSON value for a fact) in a user, tenant or topic scope
    search_memories  memories by meaning, best first, with scores
    get_memory       one memory by id
    list_memories    memories newest first, by scope and kind (paged: total, next_cursor)
    memory_history   a memory's changes, oldest first (paged)
    update_memory    content, metadata, tags, list items, counter, conversation messages
    delete_memory    mark a memory deleted (it replicates)
    list_conflicts   open conflicts: every concurrent value of a field (paged)
    resolve_conflict settle a conflicted field to a value

Transports:

- ``stdio`` (the default): the client runs the command; the token is ``--token-file`` or
  ``$CRDTMEM_TOKEN``, the node ``--url`` or ``$CRDTMEM_URL``.
- ``http`` (streamable HTTP at ``/mcp``): every request's own ``Authorization: Bearer`` token is
  passed on to the node, so each client acts with its own rights (no token of the server's is
  used). Bound anywhere but loopback, requests without a token are refused with 401 before they
  reach a tool. On start it prints one JSON line, ``{"url": ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from ..extras import require

require("mcp", "mcp", "the MCP SDK (for crdtmem mcp)")
require("uvicorn", "mcp", "uvicorn (for crdtmem mcp --transport http)")

import aiohttp  # noqa: E402
import uvicorn  # noqa: E402
from mcp.server.mcpserver import Context, MCPServer  # noqa: E402
from mcp.server.mcpserver.exceptions import ToolError  # noqa: E402
from mcp_types import ToolAnnotations  # noqa: E402

from .client import UsageError, bearer_token  # noqa: E402

Kind = Literal["fact", "preference", "list", "counter", "conversation"]

READS = ToolAnnotations(read_only_hint=True, open_world_hint=False)
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
DELETES = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)
"""Hints for clients (which tools only read, which one deletes) on every tool."""

INSTRUCTIONS = (
    "Long-term memory shared by every agent and device of the user, synced in real time. Search it "
    "before answering questions about the user; add what you learn (one fact per memory, in the "
    "user's scope: user_id). Two writes that did not see each other are kept as a conflict: list "
    "and resolve conflicts rather than overwriting."
)


class NodeClient:
    """The node's REST API over aiohttp; a refusal becomes a ToolError carrying the node's message."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def call(
        self,
        token: str | None,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
    ) -> Any:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        params = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in (query or {}).items()}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with self._session.request(
                method, self.url + path, json=body, params=params or None, headers=headers
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ToolError(f"cannot reach the crdtmem node at {self.url}: {exc}") from exc
        try:
            answer = json.loads(text) if text else None
        except ValueError:
            answer = None
        if status >= 400:
            if isinstance(answer, dict) and "message" in answer:
                raise ToolError(f"{answer.get('error', 'Error')}: {answer['message']} (HTTP {status})")
            raise ToolError(f"the node answered HTTP {status}: {text[:200]}")
        return answer

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _memory(record: dict[str, Any]) -> dict[str, Any]:
    """A memory as a tool returns it: without its embedding vector (hundreds of numbers)."""
    return {k: v for k, v in record.items() if k != "embedding"}


def _path(memory_id: str, tail: str = "") -> str:
    return f"/v1/memories/{urllib.parse.quote(memory_id, safe='')}{tail}"


def _paging(answer: dict[str, Any]) -> dict[str, Any]:
    """A list's paging fields: how many there are in all, and the cursor of the next page (or None)."""
    return {"total": answer.get("total"), "next_cursor": answer.get("next_cursor")}


def _given(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None and v != []}


def build_server(node: NodeClient, token: str | None) -> MCPServer:
    """The MCP server and its tools; ``token`` is used where a request carries no headers (stdio)."""
    from .. import __version__

    server: MCPServer = MCPServer(
        "crdtmem", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING"
    )

    def token_of(ctx: Context) -> str | None:
        headers = ctx.headers
        if headers is None:  # stdio: the token the server was started with
            return token
        scheme, _, presented = (headers.get("authorization") or "").partition(" ")
        return presented.strip() if scheme.lower() == "bearer" and presented.strip() else None

    @server.tool(
        annotations=WRITES,
        description="Store a new memory. Content: text, or any JSON value for a fact/preference.",
    )
    async def add_memory(
        content: Any,
        ctx: Context,
        kind: Kind = "fact",
        user_id: str | None = None,
        tenant_id: str | None = None,
        topics: list[str] | None = None,
        shared: bool = False,
        agent_id: str | None = None,
        session_id: str | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        memory_id: str | None = None,
    ) -> dict[str, Any]:
        body = _given(
            content=content,
            kind=kind,
            user_id=user_id,
            tenant_id=tenant_id,
            topics=topics,
            agent_id=agent_id,
            session_id=session_id,
            tags=tags,
            metadata=metadata,
            id=memory_id,
        )
        if shared:
            body["shared"] = True
        return _memory(await node.call(token_of(ctx), "POST", "/v1/memories", body))

    @server.tool(
        annotations=READS, description="Find memories by meaning, best first; each result has a score."
    )
    async def search_memories(
        query: str,
        ctx: Context,
        user_id: str | None = None,
        tenant_id: str | None = None,
        kind: Kind | None = None,
        topic: str | None = None,
        tags: list[str] | None = None,
        limit: int = 10,
    ) -> dict[str, Any]:
        body = _given(
            query=query, user_id=user_id, tenant_id=tenant_id, kind=kind, topic=topic, tags=tags, limit=limit
        )
        answer = await node.call(token_of(ctx), "POST", "/v1/search", body)
        results = [{"memory": _memory(r["memory"]), "score": r["score"]} for r in answer["results"]]
        return {"results": results}

    @server.tool(annotations=READS, description="One memory by its id (deleted ones too, marked deleted).")
    async def get_memory(memory_id: str, ctx: Context) -> dict[str, Any]:
        return _memory(await node.call(token_of(ctx), "GET", _path(memory_id)))

    @server.tool(annotations=READS, description="Memories, most recently changed first, by scope and kind.")
    async def list_memories(
        ctx: Context,
        user_id: str | None = None,
        tenant_id: str | None = None,
        topic: str | None = None,
        kind: Kind | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        query = _given(
            user_id=user_id, tenant_id=tenant_id, topic=topic, kind=kind, limit=limit, cursor=cursor
        )
        answer = await node.call(token_of(ctx), "GET", "/v1/memories", query=query)
        return {"memories": [_memory(m) for m in answer["memories"]], **_paging(answer)}

    @server.tool(
        annotations=READS,
        description="A memory's changes, oldest first: each entry's content, who wrote it and when. "
        "Pass next_cursor back as cursor for the next page.",
    )
    async def memory_history(
        memory_id: str, ctx: Context, limit: int = 50, cursor: str | None = None
    ) -> dict[str, Any]:
        query = _given(limit=limit, cursor=cursor)
        answer = await node.call(token_of(ctx), "GET", _path(memory_id, "/history"), query=query)
        return {"memory_id": answer["memory_id"], "history": answer["history"], **_paging(answer)}

    @server.tool(
        annotations=WRITES,
        description="Change a memory: new content (fact, preference), metadata keys, tags, list items, "
        "a counter increment or a conversation message. Every change lands, or none.",
    )
    async def update_memory(
        memory_id: str,
        ctx: Context,
        content: Any = None,
        metadata: dict[str, Any] | None = None,
        remove_metadata: list[str] | None = None,
        add_tags: list[str] | None = None,
        remove_tags: list[str] | None = None,
        add_items: list[Any] | None = None,
        remove_items: list[Any] | None = None,
        increment: int | None = None,
        append_role: str | None = None,
        append_text: str | None = None,
    ) -> dict[str, Any]:
        body = _given(
            content=content,
            metadata=metadata,
            remove_metadata=remove_metadata,
            add_tags=add_tags,
            remove_tags=remove_tags,
            add_items=add_items,
            remove_items=remove_items,
            increment=increment,
        )
        if (append_role is None) != (append_text is None):
            raise ToolError("give append_role and append_text together (a conversation message)")
        if append_role is not None:
            body["append_message"] = {"role": append_role, "text": append_text}
        return _memory(await node.call(token_of(ctx), "PATCH", _path(memory_id), body))

    @server.tool(
        annotations=DELETES, description="Mark a memory deleted; the deletion syncs to every replica."
    )
    async def delete_memory(memory_id: str, ctx: Context) -> dict[str, Any]:
        return _memory(await node.call(token_of(ctx), "DELETE", _path(memory_id)))

    @server.tool(
        annotations=READS,
        description="Open conflicts: fields two writers changed without seeing each other, with every "
        "value. Settle one with resolve_conflict.",
    )
    async def list_conflicts(
        ctx: Context,
        user_id: str | None = None,
        tenant_id: str | None = None,
        memory_id: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        query = _given(user_id=user_id, tenant_id=tenant_id, memory_id=memory_id, limit=limit, cursor=cursor)
        answer = await node.call(token_of(ctx), "GET", "/v1/conflicts", query=query)
        return {"conflicts": answer["conflicts"], **_paging(answer)}

    @server.tool(
        annotations=WRITES,
        description="Settle a conflicted field (content, lifecycle or metadata.KEY) of a memory to a value.",
    )
    async def resolve_conflict(memory_id: str, field: str, value: Any, ctx: Context) -> dict[str, Any]:
        body = {"field": field, "value": value}
        return _memory(await node.call(token_of(ctx), "POST", _path(memory_id, "/resolve"), body))

    return server


Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[dict[str, Any], Receive, Send], Awaitable[None]]


def require_token(app: ASGIApp) -> ASGIApp:
    """Refuse HTTP requests without a bearer token (401), before they reach the MCP server."""

    async def guarded(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                body = json.dumps(
                    {"error": "Unauthorized", "message": "send the node token as Authorization: Bearer"}
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guarded


def _loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost")


async def _serve_http(server: MCPServer, node: NodeClient, host: str, port: int) -> None:
    app: Any = server.streamable_http_app(host=host)
    if not _loopback(host):
        app = require_token(app)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # connections made once the URL is printed wait in the backlog for uvicorn
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    url = f"http://{shown}:{sock.getsockname()[1]}/mcp"
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    http = uvicorn.Server(config)
    print(json.dumps({"url": url, "transport": "streamable-http"}), flush=True)
    try:
        await http.serve(sockets=[sock])
    finally:
        await node.close()


async def _serve_stdio(server: MCPServer, node: NodeClient) -> None:
    try:
        await server.run_stdio_async()
    finally:
        await node.close()


def main(args: argparse.Namespace) -> int:
    args.token = None
    try:
        token = bearer_token(args)
    except UsageError as exc:
        print(f"crdtmem mcp: {exc}", file=sys.stderr)
        return 2
    node = NodeClient(args.url)
    server = build_server(node, token)
    try:
        if args.transport == "http":
            asyncio.run(_serve_http(server, node, args.host, args.port))
        else:
            asyncio.run(_serve_stdio(server, node))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"crdtmem mcp: {exc}", file=sys.stderr)
        return 1
    return 0
