"""The OpenAPI 3.1 description of every route a node serves, at ``GET /openapi.json``.

The spec is built in code next to the routes it describes so the two change together;
``tests/test_openapi.py`` checks that every route the application registers is described here with
its methods (and nothing more), and that real responses validate against the declared schemas.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .. import __version__
from ..document.records import KINDS
from ..ids import MAX_ID_LENGTH

if TYPE_CHECKING:
    from .context import NodeContext

Schema = dict[str, Any]


def routes(node: NodeContext) -> list[web.RouteDef]:
    async def openapi_json(request: web.Request) -> web.StreamResponse:
        return web.json_response(spec())

    return [web.get("/openapi.json", openapi_json)]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **extra: Any) -> Schema:
    return {"type": [kind, "null"], **extra}


def _object(properties: dict[str, Schema], required: list[str] | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, **extra}
    schema["required"] = list(properties) if required is None else required
    return schema


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


_PAGE: dict[str, Schema] = {
    "count": {"type": "integer", "description": "items on this page"},
    "total": {"type": "integer", "description": "items on every page (search: at most 1000)"},
    "next_cursor": {
        "type": ["string", "null"],
        "description": "pass it as cursor for the next page; null on the last",
    },
}
_FILTERS = (
    "mem0's filter grammar: {field: value | {eq|ne|gt|gte|lt|lte|in|nin|contains|icontains: ...}}, "
    "'*' for present, AND/OR/NOT lists; fields user_id, agent_id, run_id, tenant_id, kind, tags, "
    "topics, id, created_at, updated_at, any other name a metadata key"
)


_ANY: Schema = {}
_NAME: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_ID_LENGTH,
    "pattern": r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]+$",
    "description": "an app id: any text without control characters, e.g. alice@example.com or org:alice",
}
_NULLABLE_NAME: Schema = {
    **_NAME,
    "type": ["string", "null"],
    "description": _NAME["description"] + "; null: none",
}
_MEMORY_ID: Schema = {**_NAME, "not": {"enum": [".", ".."]}}
_HLC: Schema = {"type": "string", "description": "HLC timestamp, e.g. 001732390000000.000003"}
_KIND: Schema = {"type": "string", "enum": list(KINDS)}
_MESSAGE = _object({"role": {"type": "string", "minLength": 1}, "text": {"type": "string"}})
_CHANNEL: Schema = {
    "type": "string",
    "description": "user:{id}:memories, tenant:{id}:shared, topic:{id}:updates or system:global; "
    "an id's '%', ':', '*', ',' and spaces are written %XX",
}

_SCHEMAS: dict[str, Schema] = {
    "Error": _object(
        {
            "error": {"type": "string", "description": "the error class, e.g. InvalidInput"},
            "message": {"type": "string", "description": "what was wrong and what to do"},
        }
    ),
    "Source": _object(
        {"agent_id": _nullable("string"), "session_id": _nullable("string"), "user_id": _nullable("string")},
        description="who wrote the memory first",
    ),
    "Scope": _object(
        {
            "user_id": _nullable("string"),
            "tenant_id": _nullable("string"),
            "topics": _array({"type": "string"}),
            "shared": {"type": "boolean"},
        },
        description="who may see the memory; decides its channels",
    ),
    "Memory": _object(
        {
            "id": {"type": "string"},
            "kind": _KIND,
            "content": {
                "description": "fact/preference: any JSON value; list: array of items; counter: integer; "
                "conversation: array of {role, text, ...} messages",
            },
            "metadata": {"type": "object"},
            "tags": _array(_ANY),
            "source": _ref("Source"),
            "scope": _ref("Scope"),
            "channels": _array(_CHANNEL),
            "created_at": _HLC,
            "updated_at": _HLC,
            "deleted": {"type": "boolean"},
            "conflicted": {"type": "boolean"},
            "version": {"type": "integer", "description": "local version on this replica"},
            "embedding": _nullable("array", items={"type": "number"}),
            "embedding_model": _nullable("string"),
            "conflicts": _array({"type": "string", "description": "conflicted field"}),
        }
    ),
    "MemoryList": _object({"memories": _array(_ref("Memory")), **_PAGE}),
    "HistoryEntry": _object(
        {
            "origin": {"type": "string", "description": "the replica that made the change"},
            "hlc": _HLC,
            "content": _ANY,
            "deleted": {"type": "boolean"},
            "conflicted": {"type": "boolean"},
            "metadata": {"type": "object"},
            "tags": _array(_ANY),
            "content_from": {
                "type": "integer",
                "description": "a conversation's entry: how many messages precede the new ones in content",
            },
        },
        required=["origin", "hlc", "content", "deleted", "conflicted", "metadata", "tags"],
    ),
    "Forgotten": _object({"id": {"type": "string"}, "forgotten": {"type": "boolean", "const": True}}),
    "History": _object({"memory_id": {"type": "string"}, "history": _array(_ref("HistoryEntry")), **_PAGE}),
    "ConflictValue": _object({"value": _ANY, "hlc": _HLC, "replica": {"type": "string"}}),
    "Conflict": _object(
        {
            "memory_id": {"type": "string"},
            "field": {"type": "string", "description": "content, lifecycle or metadata.{key}"},
            "values": _array(_ref("ConflictValue")),
            "user_id": _nullable("string"),
            "tenant_id": _nullable("string"),
        },
        description="a field with concurrent differing values; values[0] is what reads return",
    ),
    "ConflictList": _object({"conflicts": _array(_ref("Conflict")), **_PAGE}),
    "SearchRequest": _object(
        {
            "query": {"type": "string", "minLength": 1},
            "user_id": _NULLABLE_NAME,
            "tenant_id": _NULLABLE_NAME,
            "kind": {"type": ["string", "null"], "enum": [*KINDS, None]},
            "topic": _NULLABLE_NAME,
            "tags": _array({"type": "string"}),
            "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
            "include_conflicted": {"type": "boolean", "default": True},
            "filters": {"type": ["object", "null"], "description": _FILTERS},
            "threshold": {
                "type": ["number", "null"],
                "minimum": -1,
                "maximum": 1,
                "description": "the lowest score to return (default: above 0 and the embedder's noise floor)",
            },
            "cursor": {
                "type": ["string", "null"],
                "pattern": "^o[0-9]{1,18}$",
                "description": "next_cursor of the previous page (null or absent: the first)",
            },
        },
        required=["query"],
        additionalProperties=False,
    ),
    "SearchResults": _object(
        {
            "results": _array(_object({"memory": _ref("Memory"), "score": {"type": "number"}})),
            **_PAGE,
            "model": {"type": "string", "description": "the embedder that scored the results"},
            "lexical": {"type": "boolean", "description": "scored by shared words, not by meaning"},
        }
    ),
    "MemoryCreate": _object(
        {
            "id": {
                **_MEMORY_ID,
                "type": ["string", "null"],
                "description": "the memory id (default, or null: a random one); the id of a live memory is "
                "409, the id of a deleted one takes a new incarnation of the same kind and scope",
            },
            "content": {"description": "required for fact and preference (any JSON value)"},
            "kind": {**_KIND, "default": "fact"},
            "user_id": _NULLABLE_NAME,
            "agent_id": _NULLABLE_NAME,
            "session_id": _NULLABLE_NAME,
            "tenant_id": _NULLABLE_NAME,
            "topics": _array(_NAME),
            "shared": {"type": "boolean", "default": False},
            "metadata": {"type": "object"},
            "tags": _array(_ANY),
        },
        required=[],
        additionalProperties=False,
    ),
    "MemoryPatch": _object(
        {
            "content": {"description": "fact and preference only: any JSON value"},
            "metadata": {"type": "object", "description": "keys to set"},
            "remove_metadata": _array({"type": "string"}),
            "add_tags": _array(_ANY),
            "remove_tags": _array(_ANY),
            "increment": {"type": "integer", "description": "counter only; negative to decrement"},
            "add_items": {**_array(_ANY), "description": "list only"},
            "remove_items": {**_array(_ANY), "description": "list only"},
            "append_message": {**_MESSAGE, "description": "conversation only"},
        },
        required=[],
        additionalProperties=False,
        minProperties=1,
    ),
    "Resolve": _object(
        {"field": {"type": "string", "description": "content, lifecycle or metadata.{key}"}, "value": _ANY},
        additionalProperties=False,
    ),
    "MemoryEvent": _object(
        {
            "event_id": {"type": "string", "description": "{replica_id}:{version}; resume with it"},
            "event_type": {"type": "string", "enum": ["create", "update", "delete", "conflict", "resolve"]},
            "timestamp": {"type": "string", "format": "date-time"},
            "memory_id": {"type": "string", "description": "memory.id"},
            "memory": {
                "allOf": [_ref("Memory"), _object({"type": _KIND})],
                "description": "the memory after the change; type repeats kind (the seed schema's name)",
            },
            "source": _ref("Source"),
            "channels": _array(_CHANNEL),
            "origin": {"type": "string", "description": "the replica whose write caused the change"},
        }
    ),
    "MemoryForgotten": _object(
        {
            "event_id": {"type": "string", "description": "{replica_id}:{version}; resume with it"},
            "event_type": {"const": "forgotten"},
            "timestamp": {"type": "string", "format": "date-time", "description": "of the erase marker"},
            "memory_id": {"type": "string"},
            "channels": _array(_CHANNEL),
            "origin": {"type": "string", "description": "the replica that forgot the memory"},
        },
        additionalProperties=False,
        description="the event of a memory forgotten here or on a replica that synced its erase marker: "
        "its id and channels, nothing of its content (no memory, no source)",
    ),
    "FeedOverflow": _object(
        {
            "error": {"const": "FeedOverflow"},
            "message": {"type": "string"},
            "last_event_id": _nullable("string"),
        },
        description="sent as the last SSE message (event: overflow) when the subscriber fell behind",
    ),
    "FeedReset": _object(
        {
            "event_type": {"const": "reset"},
            "replica_id": {"type": "string"},
            "last_event_id": _nullable("string"),
            "reason": {"type": "string"},
        },
        description="sent first (SSE: event: reset, no id) when a resume point cannot be used: drop "
        "what you hold; the current state of every readable memory follows",
    ),
    "FeedMessage": _object(
        {
            "id": {"type": "string", "description": "the event_id (resume with it)"},
            "event": {"type": "string", "description": "the event_type, or reset or overflow"},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {
                    "anyOf": [
                        _ref("MemoryEvent"),
                        _ref("MemoryForgotten"),
                        _ref("FeedReset"),
                        _ref("FeedOverflow"),
                    ]
                },
            },
        },
        required=["data"],
        description="one Server-Sent Events message of the feed, as OpenAPI describes event streams",
    ),
    "Status": _object(
        {
            "replica_id": {"type": "string"},
            "public_key": _nullable("string"),
            "url": {"type": "string"},
            "channels": _array(_CHANNEL),
            "subscribed": _nullable("array", items=_CHANNEL),
            "version_vectors": {
                "type": "object",
                "additionalProperties": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
            "memories": {"type": "integer"},
            "pending_deltas": {"type": "integer"},
            "event_subscribers": {"type": "integer"},
            "storage": _object(
                {
                    "integrity": _nullable("array", items={"type": "string"}),
                    "quarantined": _array(
                        _object(
                            {
                                "memory_id": {"type": "string"},
                                "reason": {"type": "string"},
                                "since": {"type": "string", "format": "date-time"},
                            }
                        )
                    ),
                },
                description='what the integrity check on open found (["ok"] when clean), and the '
                "memories set aside because their stored data does not read back (kept across "
                "restarts until released with crdtmem check --release)",
            ),
            "peers": _array({"type": "object"}),
            "links": _array({"type": "object"}),
        },
        required=["replica_id", "url", "channels", "subscribed", "version_vectors"],
        description="A token that reads every channel sees everything; any other token sees the "
        "replica's identity and only the channels it may read, with their vectors.",
    ),
    "Health": _object(
        {
            "ok": {"type": "boolean"},
            "replica_id": {"type": "string"},
            "ready": {"type": "boolean"},
            "bus": _nullable("object"),
        }
    ),
    "SyncPullRequest": _object(
        {
            "channels": _array(_CHANNEL),
            "vectors": {
                "type": "object",
                "description": "{channel: {origin: seq}}: what the caller already has",
                "additionalProperties": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
            "limit": {"type": "integer", "minimum": 1, "maximum": 5000, "default": 1000},
        },
        required=["channels"],
    ),
    "SyncPushResult": _object(
        {
            "applied": {"type": "integer"},
            "duplicates": {"type": "integer", "description": "held already, or decided against before"},
            "pending": {"type": "integer", "description": "deltas of this payload now waiting"},
            "ignored": {"type": "integer", "description": "only for channels this node does not sync"},
            "refused": {
                "type": "integer",
                "description": "deltas not applied: the caller may not write their memory, or they are "
                "wrong in themselves (decided against for good), or stamped too far ahead",
            },
            "vectors": {"type": "object"},
        }
    ),
}


def _error(description: str, **headers: Schema) -> Schema:
    response: Schema = {
        "description": description,
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    if headers:
        response["headers"] = {name: {"schema": schema} for name, schema in headers.items()}
    return response


_RESPONSES: dict[str, Schema] = {
    "BadRequest": _error("malformed JSON, unknown field, wrong type or invalid value; nothing changed"),
    "Unauthorized": _error("missing or unknown bearer token"),
    "Forbidden": _error("the principal may not read or write a channel involved"),
    "NotFound": _error("no such memory, or one the principal may not see"),
    "Conflict": _error("the memory is deleted, the field is not in conflict, or the id is taken"),
    "RateLimited": _error(
        "over one of the principal's rates (writes, pushed deltas, bytes of request bodies); the body's "
        "retry_after is the wait in seconds",
        **{"Retry-After": {"type": "integer", "description": "seconds"}},
    ),
    "TooLarge": _error(
        "the body, or a count or size in it (topics, tags, metadata keys, content bytes), is over the "
        "node's limits; the body names the limit and its maximum"
    ),
    "Unprocessable": _error("a timestamp in the payload is too far ahead of this replica's clock"),
    "Unavailable": _error("the store failed or the replica is closing; retry"),
}


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


_ID_PARAM: Schema = {"name": "id", "in": "path", "required": True, "schema": _MEMORY_ID}
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
    memory = _json(_ref("Memory"), "the memory")
    return {
        "/v1/memories": {
            "post": _operation(
                "Create a memory; its channels follow from user_id, tenant_id, topics and shared",
                "memories",
                {
                    "201": {
                        **_json(_ref("Memory"), "created"),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401, 403, 409, 429, 503),
                },
                operationId="createMemory",
                requestBody=_body(_ref("MemoryCreate")),
            ),
            "get": _operation(
                "List readable memories matching every filter, most recently changed first",
                "memories",
                {"200": _json(_ref("MemoryList"), "the memories"), **_errors(400, 401, 503)},
                operationId="listMemories",
                parameters=[
                    _query("user_id", _NAME, "scope user"),
                    _query("tenant_id", _NAME, "scope tenant"),
                    _query("topic", _NAME, "one of the memory's topics"),
                    _query("kind", _KIND, "memory kind"),
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
                    _query("filters", {"type": "string"}, "a JSON object: " + _FILTERS),
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
                requestBody=_body(_ref("MemoryPatch")),
            ),
            "delete": _operation(
                "Mark a memory deleted; with purge=true, forget it: its content is erased here and, "
                "by a replicated erase marker, on every replica that syncs it (needs what deleting "
                "needs: write access to every channel of the memory; cannot be undone)",
                "memories",
                {
                    "200": _json(
                        {"oneOf": [_ref("Memory"), _ref("Forgotten")]},
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
                {"200": _json(_ref("History"), "the history"), **_errors(*_READ_ERRORS)},
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
                requestBody=_body(_ref("Resolve")),
            ),
        },
        "/v1/conflicts": {
            "get": _operation(
                "Open conflicts of readable memories, sorted by memory id and field",
                "conflicts",
                {"200": _json(_ref("ConflictList"), "the conflicts"), **_errors(*_READ_ERRORS)},
                operationId="listConflicts",
                parameters=[
                    _query("user_id", _NAME, "scope user"),
                    _query("tenant_id", _NAME, "scope tenant"),
                    _query("memory_id", _NAME, "one memory"),
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
                {"200": _json(_ref("SearchResults"), "the hits"), **_errors(400, 401, 403)},
                operationId="search",
                requestBody=_body(_ref("SearchRequest")),
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
                        "content": {"text/event-stream": {"schema": _ref("FeedMessage")}},
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
                        _array(_CHANNEL),
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
                {"200": _json(_ref("Status"), "status"), **_errors(401, 503)},
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
                {"200": _json(_ref("Health"), "alive")},
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
                    "200": _json(_ref("Health"), "ready"),
                    "503": _json(_ref("Health"), "not ready (the bus is not connected, or bus.behind)"),
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
                requestBody=_body(_ref("SyncPullRequest"), "application/x-msgpack"),
            ),
        },
        "/v1/sync/push": {
            "post": _operation(
                "Push a crdtmem.deltas payload: every channel it names must be writable and every "
                "origin one the caller may introduce (else 403, nothing applied); each delta is then "
                "authorized against its memory's channels",
                "sync",
                {
                    "200": _json(_ref("SyncPushResult"), "what was applied"),
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
            "schemas": _SCHEMAS,
            "responses": _RESPONSES,
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
