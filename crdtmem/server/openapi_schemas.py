"""The components of the OpenAPI description (``openapi.py``): the schemas of every body a node
reads or writes, and the error responses its operations refer to."""

from __future__ import annotations

from typing import Any

from ..document.records import KINDS
from ..ids import MAX_ID_LENGTH

__all__ = [
    "CHANNEL",
    "FILTERS",
    "KIND",
    "MEMORY_ID",
    "NAME",
    "RESPONSES",
    "SCHEMAS",
    "Schema",
    "array_of",
    "ref",
]

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **extra: Any) -> Schema:
    return {"type": [kind, "null"], **extra}


def _object(properties: dict[str, Schema], required: list[str] | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, **extra}
    schema["required"] = list(properties) if required is None else required
    return schema


def array_of(items: Schema) -> Schema:
    return {"type": "array", "items": items}


_PAGE: dict[str, Schema] = {
    "count": {"type": "integer", "description": "items on this page"},
    "total": {"type": "integer", "description": "items on every page (search: at most 1000)"},
    "next_cursor": {
        "type": ["string", "null"],
        "description": "pass it as cursor for the next page; null on the last",
    },
}
FILTERS = (
    "mem0's filter grammar: {field: value | {eq|ne|gt|gte|lt|lte|in|nin|contains|icontains: ...}}, "
    "'*' for present, AND/OR/NOT lists; fields user_id, agent_id, run_id, tenant_id, kind, tags, "
    "topics, id, created_at, updated_at, any other name a metadata key"
)


_ANY: Schema = {}
NAME: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_ID_LENGTH,
    "pattern": r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]+$",
    "description": "an app id: any text without control characters, e.g. alice@example.com or org:alice",
}
_NULLABLE_NAME: Schema = {
    **NAME,
    "type": ["string", "null"],
    "description": NAME["description"] + "; null: none",
}
MEMORY_ID: Schema = {**NAME, "not": {"enum": [".", ".."]}}
_HLC: Schema = {"type": "string", "description": "HLC timestamp, e.g. 001732390000000.000003"}
KIND: Schema = {"type": "string", "enum": list(KINDS)}
_MESSAGE = _object({"role": {"type": "string", "minLength": 1}, "text": {"type": "string"}})
CHANNEL: Schema = {
    "type": "string",
    "description": "user:{id}:memories, tenant:{id}:shared, topic:{id}:updates or system:global; "
    "an id's '%', ':', '*', ',' and spaces are written %XX",
}

SCHEMAS: dict[str, Schema] = {
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
            "topics": array_of({"type": "string"}),
            "shared": {"type": "boolean"},
        },
        description="who may see the memory; decides its channels",
    ),
    "Memory": _object(
        {
            "id": {"type": "string"},
            "kind": KIND,
            "content": {
                "description": "fact/preference: any JSON value; list: array of items; counter: integer; "
                "conversation: array of {role, text, ...} messages",
            },
            "metadata": {"type": "object"},
            "tags": array_of(_ANY),
            "source": ref("Source"),
            "scope": ref("Scope"),
            "channels": array_of(CHANNEL),
            "created_at": _HLC,
            "updated_at": _HLC,
            "deleted": {"type": "boolean"},
            "conflicted": {"type": "boolean"},
            "version": {"type": "integer", "description": "local version on this replica"},
            "embedding": _nullable("array", items={"type": "number"}),
            "embedding_model": _nullable("string"),
            "conflicts": array_of({"type": "string", "description": "conflicted field"}),
        }
    ),
    "MemoryList": _object({"memories": array_of(ref("Memory")), **_PAGE}),
    "HistoryEntry": _object(
        {
            "origin": {"type": "string", "description": "the replica that made the change"},
            "hlc": _HLC,
            "content": _ANY,
            "deleted": {"type": "boolean"},
            "conflicted": {"type": "boolean"},
            "metadata": {"type": "object"},
            "tags": array_of(_ANY),
            "content_from": {
                "type": "integer",
                "description": "a conversation's entry: how many messages precede the new ones in content",
            },
        },
        required=["origin", "hlc", "content", "deleted", "conflicted", "metadata", "tags"],
    ),
    "Forgotten": _object({"id": {"type": "string"}, "forgotten": {"type": "boolean", "const": True}}),
    "History": _object({"memory_id": {"type": "string"}, "history": array_of(ref("HistoryEntry")), **_PAGE}),
    "ConflictValue": _object({"value": _ANY, "hlc": _HLC, "replica": {"type": "string"}}),
    "Conflict": _object(
        {
            "memory_id": {"type": "string"},
            "field": {"type": "string", "description": "content, lifecycle or metadata.{key}"},
            "values": array_of(ref("ConflictValue")),
            "user_id": _nullable("string"),
            "tenant_id": _nullable("string"),
        },
        description="a field with concurrent differing values; values[0] is what reads return",
    ),
    "ConflictList": _object({"conflicts": array_of(ref("Conflict")), **_PAGE}),
    "SearchRequest": _object(
        {
            "query": {"type": "string", "minLength": 1},
            "user_id": _NULLABLE_NAME,
            "tenant_id": _NULLABLE_NAME,
            "kind": {"type": ["string", "null"], "enum": [*KINDS, None]},
            "topic": _NULLABLE_NAME,
            "tags": array_of({"type": "string"}),
            "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
            "include_conflicted": {"type": "boolean", "default": True},
            "filters": {"type": ["object", "null"], "description": FILTERS},
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
            "results": array_of(_object({"memory": ref("Memory"), "score": {"type": "number"}})),
            **_PAGE,
            "model": {"type": "string", "description": "the embedder that scored the results"},
            "lexical": {"type": "boolean", "description": "scored by shared words, not by meaning"},
        }
    ),
    "MemoryCreate": _object(
        {
            "id": {
                **MEMORY_ID,
                "type": ["string", "null"],
                "description": "the memory id (default, or null: a random one); the id of a live memory is "
                "409, the id of a deleted one takes a new incarnation of the same kind and scope",
            },
            "content": {"description": "required for fact and preference (any JSON value)"},
            "kind": {**KIND, "default": "fact"},
            "user_id": _NULLABLE_NAME,
            "agent_id": _NULLABLE_NAME,
            "session_id": _NULLABLE_NAME,
            "tenant_id": _NULLABLE_NAME,
            "topics": array_of(NAME),
            "shared": {"type": "boolean", "default": False},
            "metadata": {"type": "object"},
            "tags": array_of(_ANY),
        },
        required=[],
        additionalProperties=False,
    ),
    "MemoryPatch": _object(
        {
            "content": {"description": "fact and preference only: any JSON value"},
            "metadata": {"type": "object", "description": "keys to set"},
            "remove_metadata": array_of({"type": "string"}),
            "add_tags": array_of(_ANY),
            "remove_tags": array_of(_ANY),
            "increment": {"type": "integer", "description": "counter only; negative to decrement"},
            "add_items": {**array_of(_ANY), "description": "list only"},
            "remove_items": {**array_of(_ANY), "description": "list only"},
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
                "allOf": [ref("Memory"), _object({"type": KIND})],
                "description": "the memory after the change; type repeats kind (the seed schema's name)",
            },
            "source": ref("Source"),
            "channels": array_of(CHANNEL),
            "origin": {"type": "string", "description": "the replica whose write caused the change"},
        }
    ),
    "MemoryForgotten": _object(
        {
            "event_id": {"type": "string", "description": "{replica_id}:{version}; resume with it"},
            "event_type": {"const": "forgotten"},
            "timestamp": {"type": "string", "format": "date-time", "description": "of the erase marker"},
            "memory_id": {"type": "string"},
            "channels": array_of(CHANNEL),
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
                        ref("MemoryEvent"),
                        ref("MemoryForgotten"),
                        ref("FeedReset"),
                        ref("FeedOverflow"),
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
            "channels": array_of(CHANNEL),
            "subscribed": _nullable("array", items=CHANNEL),
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
                    "quarantined": array_of(
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
            "peers": array_of({"type": "object"}),
            "links": array_of({"type": "object"}),
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
            "channels": array_of(CHANNEL),
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
        "content": {"application/json": {"schema": ref("Error")}},
    }
    if headers:
        response["headers"] = {name: {"schema": schema} for name, schema in headers.items()}
    return response


RESPONSES: dict[str, Schema] = {
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
