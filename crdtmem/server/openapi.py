"""The OpenAPI 3.1 description of every route a node serves, at ``GET /openapi.json``.

The spec is built in code next to the routes it describes so the two change together;
``tests/test_openapi.py`` checks that every route the application registers is described here with
its methods (and nothing more), and that real responses validate against the declared schemas.
The paths and their operations are here; the component schemas and error responses they refer to
are in ``openapi_schemas.py``.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import __version__
from .openapi_schemas import (
    CHANNEL,
    FILTERS,
    KIND,
    MEMORY_ID,
    NAME,
    RESPONSES,
    SCHEMAS,
    Schema,
    array_of,
    ref,
)

if TYPE_CHECKING:
    from .context import NodeContext


def routes(node: NodeContext) -> list[web.RouteDef]:
    async def openapi_json(request: web.Request) -> web.StreamResponse:
        return web.json_response(spec())

    return [web.get("/openapi.json", openapi_json)]


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Schema]:
    names = {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        409: "Conflict",
        413: "TooLarge",
        422: "Unprocessable",
        429: "RateLimited",
        503: "Unavailable",
    }
    return {str(code): {"$ref": f"#/components/responses/{names[code]}"} for code in codes}


def _query(name: str, schema: Schema, description: str, **extra: Any) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
        **extra,
    }


_ID_PARAM: Schema = {"name": "id", "in": "path", "required": True, "schema": MEMORY_ID}
_CURSOR_PARAM: Schema = _query(
    "cursor",
    {"type": "string", "pattern": "^[vo][0-9]{1,18}$"},
    "next_cursor of the previous page",
)
_READ_ERRORS = (400, 401, 404, 503)
_WRITE_ERRORS = (400, 401, 403, 404, 409, 429, 503)
_PUBLIC: list[dict[str, list[str]]] = []


def _operation(summary: str, tag: str, responses: dict[str, Schema], **extra: Any) -> Schema:
    """An operation; one that takes a body may answer 413 (the body, or a count or size in it, is
    over the node's limits), whatever else it declares."""
    if "requestBody" in extra:
        responses = {**responses, **_errors(413)}
    return {"summary": summary, "tags": [tag], "responses": responses, **extra}


def _body(schema: Schema, content_type: str = "application/json") -> Schema:
    return {"required": True, "content": {content_type: {"schema": schema}}}


def _paths() -> dict[str, Schema]:
    memory = _json(ref("Memory"), "the memory")
    return {
        "/v1/memories": {
            "post": _operation(
                "Create a memory; its channels follow from user_id, tenant_id, topics and shared",
                "memories",
                {
                    "201": {
                        **_json(ref("Memory"), "created"),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401, 403, 409, 429, 503),
                },
                operationId="createMemory",
                requestBody=_body(ref("MemoryCreate")),
            ),
            "get": _operation(
                "List readable memories matching every filter, most recently changed first",
                "memories",
                {"200": _json(ref("MemoryList"), "the memories"), **_errors(400, 401, 503)},
                operationId="listMemories",
                parameters=[
                    _query("user_id", NAME, "scope user"),
                    _query("tenant_id", NAME, "scope tenant"),
                    _query("topic", NAME, "one of the memory's topics"),
                    _query("kind", KIND, "memory kind"),
                    _query(
                        "include_deleted",
                        {"type": "boolean", "default": False},
                        "include deleted memories (those in a delete conflict are always listed)",
                    ),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                        "at most this many",
                    ),
                    _CURSOR_PARAM,
                    _query("filters", {"type": "string"}, "a JSON object: " + FILTERS),
                ],
            ),
        },
        "/v1/memories/{id}": {
            "parameters": [_ID_PARAM],
            "get": _operation(
                "Read one memory (deleted ones too)",
                "memories",
                {"200": memory, **_errors(*_READ_ERRORS)},
                operationId="getMemory",
            ),
            "patch": _operation(
                "Change a memory: content/metadata/tags, or increment, add_items/remove_items, "
                "append_message by kind",
                "memories",
                {"200": memory, **_errors(*_WRITE_ERRORS)},
                operationId="updateMemory",
                requestBody=_body(ref("MemoryPatch")),
            ),
            "delete": _operation(
                "Mark a memory deleted; with purge=true, forget it: its content is erased here and, "
                "by a replicated erase marker, on every replica that syncs it (needs what deleting "
                "needs: write access to every channel of the memory; cannot be undone)",
                "memories",
                {
                    "200": _json(
                        {"oneOf": [ref("Memory"), ref("Forgotten")]},
                        "the deleted memory, or {id, forgotten: true} with purge=true",
                    ),
                    **_errors(*_WRITE_ERRORS),
                },
                operationId="deleteMemory",
                parameters=[
                    _query(
                        "purge",
                        {"type": "boolean", "default": False},
                        "forget the memory instead of marking it deleted",
                    )
                ],
            ),
        },
        "/v1/memories/{id}/history": {
            "parameters": [_ID_PARAM],
            "get": _operation(
                "Every change this replica applied to the memory, oldest first, a page at a time",
                "memories",
                {"200": _json(ref("History"), "the history"), **_errors(*_READ_ERRORS)},
                operationId="memoryHistory",
                parameters=[
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
                        "at most this many entries",
                    ),
                    _CURSOR_PARAM,
                ],
            ),
        },
        "/v1/memories/{id}/resolve": {
            "parameters": [_ID_PARAM],
            "post": _operation(
                "Settle a conflicted field to a value; the resolution replicates like any write",
                "conflicts",
                {"200": memory, **_errors(*_WRITE_ERRORS)},
                operationId="resolveConflict",
                requestBody=_body(ref("Resolve")),
            ),
        },
        "/v1/conflicts": {
            "get": _operation(
                "Open conflicts of readable memories, sorted by memory id and field",
                "conflicts",
                {"200": _json(ref("ConflictList"), "the conflicts"), **_errors(*_READ_ERRORS)},
                operationId="listConflicts",
                parameters=[
                    _query("user_id", NAME, "scope user"),
                    _query("tenant_id", NAME, "scope tenant"),
                    _query("memory_id", NAME, "one memory"),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                        "at most this many",
                    ),
                    _CURSOR_PARAM,
                ],
            ),
        },
        "/dashboard": {
            "get": _operation(
                "The live dashboard (HTML; public page, it carries no data: pass ?token= for its API calls)",
                "dashboard",
                {
                    "200": {
                        "description": "the page",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    "304": {"description": "not modified (If-None-Match)"},
                },
                operationId="dashboard",
                security=_PUBLIC,
                parameters=[
                    _query("token", {"type": "string"}, "bearer token the page uses for its API calls")
                ],
            ),
        },
        "/dashboard/": {
            "get": _operation(
                "Redirects to /dashboard, keeping the query",
                "dashboard",
                {"308": {"description": "permanent redirect to ../dashboard"}},
                operationId="dashboardSlash",
                security=_PUBLIC,
            ),
        },
        "/dashboard/{name}": {
            "parameters": [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "dashboard.js or dashboard.css",
                }
            ],
            "get": _operation(
                "The dashboard's script and style sheet",
                "dashboard",
                {
                    "200": {
                        "description": "the file",
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                        },
                    },
                    "304": {"description": "not modified"},
                    "404": {"description": "no such file"},
                },
                operationId="dashboardAsset",
                security=_PUBLIC,
            ),
        },
        "/v1/search": {
            "post": _operation(
                "Memories by meaning, best first, limited to what the caller may read",
                "search",
                {"200": _json(ref("SearchResults"), "the hits"), **_errors(400, 401, 403)},
                operationId="search",
                requestBody=_body(ref("SearchRequest")),
            ),
        },
        "/v1/events": {
            "get": _operation(
                "The MemoryEvent feed as Server-Sent Events, or as a WebSocket of JSON text messages "
                "when the request is an upgrade",
                "events",
                {
                    "200": {
                        "description": "an SSE stream: id = event_id, event = event_type, data = "
                        "MemoryEvent JSON (MemoryForgotten for event: forgotten); ': heartbeat' comments "
                        "every 15 s; a final 'event: overflow' (data: FeedOverflow) if the client fell "
                        "behind; resume with Last-Event-ID",
                        "content": {"text/event-stream": {"schema": ref("FeedMessage")}},
                    },
                    "101": {
                        "description": "WebSocket: each text message is MemoryEvent (or MemoryForgotten) "
                        "JSON; closes with 1013 if the client fell behind (reconnect with last_event_id)"
                    },
                    **_errors(400, 401, 403, 503),
                },
                operationId="events",
                parameters=[
                    _query(
                        "channel",
                        array_of(CHANNEL),
                        "channels to follow (repeat, or comma-separated); default: every readable one",
                        style="form",
                        explode=True,
                    ),
                    _query(
                        "last_event_id",
                        {"type": "string"},
                        "resume after this event id (same as the Last-Event-ID header)",
                    ),
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "example": "laptop:42",
                        "description": "resume: replay the current state of what changed since, then go live",
                    },
                ],
            ),
        },
        "/v1/status": {
            "get": _operation(
                "Replica, channels, version vectors, peers and links (a principal's own channels only, "
                "unless it reads every channel)",
                "operations",
                {"200": _json(ref("Status"), "status"), **_errors(401, 503)},
                operationId="status",
            ),
        },
        "/metrics": {
            "get": _operation(
                "Prometheus metrics (for a token reading every channel: labels name principals and peers)",
                "operations",
                {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors(401, 403),
                },
                operationId="metrics",
            ),
        },
        "/healthz": {
            "get": _operation(
                "Liveness",
                "operations",
                {"200": _json(ref("Health"), "alive")},
                operationId="healthz",
                security=_PUBLIC,
            ),
        },
        "/readyz": {
            "get": _operation(
                "Readiness: 503 while a configured NATS bus is not connected, or while the node "
                "catches up on entries its stream dropped (bus.behind says why)",
                "operations",
                {
                    "200": _json(ref("Health"), "ready"),
                    "503": _json(ref("Health"), "not ready (the bus is not connected, or bus.behind)"),
                },
                operationId="readyz",
                security=_PUBLIC,
            ),
        },
        "/openapi.json": {
            "get": _operation(
                "This document",
                "operations",
                {"200": _json({"type": "object"}, "the OpenAPI description")},
                operationId="openapi",
                security=_PUBLIC,
            ),
        },
        "/v1/sync/pull": {
            "post": _operation(
                "Pull the deltas the caller is missing (one page); X-Crdtmem-More: 1 when there is more",
                "sync",
                {
                    "200": {
                        "description": "a crdtmem.deltas payload (msgpack)",
                        "headers": {"X-Crdtmem-More": {"schema": {"type": "string", "enum": ["0", "1"]}}},
                        "content": {
                            "application/x-crdtmem-deltas": {
                                "schema": {
                                    "type": "string",
                                    "contentMediaType": "application/x-crdtmem-deltas",
                                }
                            }
                        },
                    },
                    **_errors(400, 401, 403, 503),
                },
                operationId="syncPull",
                requestBody=_body(ref("SyncPullRequest"), "application/x-msgpack"),
            ),
        },
        "/v1/sync/push": {
            "post": _operation(
                "Push a crdtmem.deltas payload: every channel it names must be writable and every "
                "origin one the caller may introduce (else 403, nothing applied); each delta is then "
                "authorized against its memory's channels",
                "sync",
                {
                    "200": _json(ref("SyncPushResult"), "what was applied"),
                    **_errors(400, 401, 403, 413, 422, 429, 503),
                },
                operationId="syncPush",
                requestBody=_body(
                    {"type": "string", "contentMediaType": "application/x-crdtmem-deltas"},
                    "application/x-crdtmem-deltas",
                ),
            ),
        },
        "/v1/sync/ws": {
            "get": _operation(
                "The replication WebSocket: binary msgpack frames (hello, deltas, ack, ...; see "
                "docs/protocol.md)",
                "sync",
                {"101": {"description": "switching to the replication WebSocket"}, **_errors(400, 401)},
                operationId="syncWebSocket",
            ),
        },
    }


@cache
def spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document (built once; treat it as read-only)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "crdtmem node",
            "version": __version__,
            "description": "Real-time memory sync for AI agents: memories as CRDTs, the REST API, the "
            "MemoryEvent feed and replication. Errors are {error, message} JSON.",
        },
        "security": [{"bearer": []}, {"tokenQuery": []}],
        "tags": [{"name": name} for name in ("memories", "conflicts", "events", "sync", "operations")],
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "responses": RESPONSES,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "tokenQuery": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": "for browsers' EventSource and WebSocket",
                },
            },
        },
    }
