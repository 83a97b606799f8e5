"""The REST API: memories, their history and their conflicts as JSON over HTTP.

    POST   /v1/memories                create                 -> 201 Memory
    GET    /v1/memories                list, newest first     -> {"memories": [Memory], "count"}
    GET    /v1/memories/{id}           one memory             -> Memory
    PATCH  /v1/memories/{id}           change it              -> Memory
    DELETE /v1/memories/{id}           mark it deleted        -> Memory
    DELETE /v1/memories/{id}?purge=true  forget it (erase)    -> {"id", "forgotten": true}
    GET    /v1/memories/{id}/history   its changes            -> {"memory_id", "history": [HistoryEntry]}
    POST   /v1/memories/{id}/resolve   settle a conflict      -> Memory
    GET    /v1/conflicts               open conflicts         -> {"conflicts": [Conflict]}
    GET    /openapi.json               the OpenAPI description of all of the above (see openapi.py)

Memory is :meth:`Memory.to_dict`, Conflict :meth:`Conflict.to_dict`; errors are
``{"error": code, "message": text}`` (see errors.py).

Access follows :mod:`crdtmem.access`: a memory is readable if any of its channels is, writable if all
of them are. A memory the caller may neither read nor write answers 404 exactly like a missing one, so
ids do not leak across tenants; a memory the caller can see but may not change answers 403. Lists and
conflicts leave out what the caller may not read. Every write first passes the node's per-principal
rate limit (429 with Retry-After).

Bodies and query strings are untrusted: malformed JSON, unknown fields and wrong types answer 400
naming the field, before anything is written. A PATCH may combine operations; they are checked
together up front (including that they fit the memory's kind) and then committed one after another,
each as its own change with its own event.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from ..access import AccessDenied, Principal, may_read_memory, may_write_memory
from ..document.memory import UNSET
from ..document.records import KINDS, REGISTER_KINDS, HistoryEntry, Kind, Memory, Scope
from ..errors import InvalidInput, MemoryExists, NotFound, WrongKind
from ..ids import check_id, check_memory_id
from . import openapi
from .auth import PRINCIPAL
from .paging import filters_param, offset_cursor, page, version_cursor

if TYPE_CHECKING:
    from .context import NodeContext

DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000
HISTORY_LIMIT = 50
MAX_HISTORY_LIMIT = 500
_AUTH_QUERY = ("token",)  # accepted everywhere: browsers cannot set Authorization on some requests


def routes(node: NodeContext) -> list[web.RouteDef]:
    replica = node.replica

    async def create(request: web.Request) -> web.StreamResponse:
        principal = _principal(request)
        node.check_rate(principal)
        _no_query(request)
        body = await _json_body(request, _CREATE_FIELDS)
        replica.limits.check_count("topics", len(body.get("topics", ())), "topics of a memory")
        scope = Scope(
            body.get("user_id"),
            body.get("tenant_id"),
            tuple(body.get("topics", ())),
            body.get("shared", False),
        )
        _require_write(principal, scope.channels())
        if body.get("id") is not None:
            await _id_free_or_own(node, principal, body["id"])
        memory = await replica.add(
            body.get("content", UNSET),
            kind=body.get("kind", "fact"),
            user_id=scope.user_id,
            agent_id=body.get("agent_id"),
            session_id=body.get("session_id"),
            tenant_id=scope.tenant_id,
            topics=scope.topics,
            shared=scope.shared,
            metadata=body.get("metadata"),
            tags=body.get("tags", ()),
            memory_id=body.get("id"),
        )
        return web.json_response(
            memory.to_dict(), status=201, headers={"Location": f"/v1/memories/{quote(memory.id, safe='')}"}
        )

    async def get(request: web.Request) -> web.StreamResponse:
        _no_query(request)
        memory = await _readable(node, _principal(request), _memory_id(request))
        return web.json_response(memory.to_dict())

    async def change(request: web.Request) -> web.StreamResponse:
        principal = _principal(request)
        node.check_rate(principal)
        memory_id = _memory_id(request)
        _no_query(request)
        body = await _json_body(request, _PATCH_FIELDS)
        if not body:
            raise InvalidInput(f"nothing to change: give at least one of {', '.join(_PATCH_FIELDS)}")
        memory = await _writable(node, principal, memory_id)
        _check_fits_kind(memory.kind, body)
        message = body.get("append_message")
        memory = await replica.change(  # one write: every change in the body, or none
            memory_id,
            **{k: body[k] for k in _UPDATE_FIELDS if k in body},
            increment=body.get("increment"),
            add_items=body.get("add_items", ()),
            remove_items=body.get("remove_items", ()),
            append_message=(message["role"], message["text"]) if message is not None else None,
        )
        return web.json_response(memory.to_dict())

    async def delete(request: web.Request) -> web.StreamResponse:
        principal = _principal(request)
        node.check_rate(principal)
        memory_id = _memory_id(request)
        purge = _bool_param(_query(request, ("purge",)), "purge")
        await _writable(node, principal, memory_id)  # forgetting needs what deleting needs
        if purge:
            await replica.forget(memory_id)
            return web.json_response({"id": memory_id, "forgotten": True})
        return web.json_response((await replica.delete(memory_id)).to_dict())

    async def list_memories(request: web.Request) -> web.StreamResponse:
        principal = _principal(request)
        query = _query(
            request,
            ("user_id", "tenant_id", "topic", "kind", "include_deleted", "limit", "cursor", "filters"),
        )
        kind = query.get("kind")
        if kind is not None and kind not in KINDS:
            raise InvalidInput(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        limit = _int_param(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        scope: dict[str, Any] = {
            "user_id": _name_param(query, "user_id"),
            "tenant_id": _name_param(query, "tenant_id"),
            "topic": _name_param(query, "topic"),
            "kind": kind,
            "include_deleted": _bool_param(query, "include_deleted"),
            "filters": filters_param(query),
            # the store keeps what the caller may read, before the limit
            "readable": None if _reads_everything(principal) else list(principal.read),
        }
        found = await replica.list(**scope, limit=limit + 1, before_version=version_cursor(query))
        memories = found[:limit]
        more = len(found) > limit
        total = await replica.count(**scope)
        cursor = f"v{memories[-1].version}" if more else None
        return web.json_response(page("memories", [m.to_dict() for m in memories], total, cursor))

    async def history(request: web.Request) -> web.StreamResponse:
        query = _query(request, ("limit", "cursor"))
        memory = await _readable(node, _principal(request), _memory_id(request))
        limit = _int_param(query, "limit", HISTORY_LIMIT, 1, MAX_HISTORY_LIMIT)
        offset = offset_cursor(query)
        # one entry before the page: a conversation's entries carry only the messages they added
        before = min(offset, 1)
        entries, total = await replica.history_page(memory.id, offset=offset - before, limit=limit + before)
        previous = entries[0] if before and entries else None
        shown = []
        for entry in entries[before:]:
            shown.append(_history_json(entry, previous, memory.kind == "conversation"))
            previous = entry
        cursor = f"o{offset + limit}" if offset + limit < total else None
        body = page("history", shown, total, cursor)
        return web.json_response({"memory_id": memory.id, **body})

    async def conflicts(request: web.Request) -> web.StreamResponse:
        principal = _principal(request)
        query = _query(request, ("user_id", "tenant_id", "memory_id", "limit", "cursor"))
        limit = _int_param(query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = offset_cursor(query)
        memory_id = _name_param(query, "memory_id")
        if memory_id is not None:
            await _readable(node, principal, memory_id)
        found = await replica.conflicts(
            user_id=_name_param(query, "user_id"),
            tenant_id=_name_param(query, "tenant_id"),
            memory_id=memory_id,
        )
        readable: dict[str, bool] = {}
        visible = []
        for conflict in found:
            if conflict.memory_id not in readable:
                readable[conflict.memory_id] = await _may_read_id(node, principal, conflict.memory_id)
            if readable[conflict.memory_id]:
                visible.append(conflict)
        shown = [c.to_dict() for c in visible[offset : offset + limit]]
        cursor = f"o{offset + limit}" if offset + limit < len(visible) else None
        return web.json_response(page("conflicts", shown, len(visible), cursor))

    async def resolve(request: web.Request) -> web.StreamResponse:
        principal = _principal(request)
        node.check_rate(principal)
        memory_id = _memory_id(request)
        _no_query(request)
        body = await _json_body(request, _RESOLVE_FIELDS, required=("field", "value"))
        await _writable(node, principal, memory_id)
        memory = await replica.resolve(memory_id, field=body["field"], value=body["value"])
        return web.json_response(memory.to_dict())

    return [
        web.post("/v1/memories", create),
        web.get("/v1/memories", list_memories),
        web.get("/v1/memories/{id}", get),
        web.patch("/v1/memories/{id}", change),
        web.delete("/v1/memories/{id}", delete),
        web.get("/v1/memories/{id}/history", history),
        web.post("/v1/memories/{id}/resolve", resolve),
        web.get("/v1/conflicts", conflicts),
        *openapi.routes(node),
    ]


# -- access ------------------------------------------------------------------------------------


def _principal(request: web.Request) -> Principal:
    principal: Principal = request[PRINCIPAL]
    return principal


def _reads_everything(principal: Principal) -> bool:
    return "*" in principal.read


def _hidden(node: NodeContext, memory_id: str) -> NotFound:
    """The error for a memory the caller may not see: word for word a real miss."""
    return NotFound(f"no memory with id {memory_id!r} on replica {node.replica.id}")


async def _readable(node: NodeContext, principal: Principal, memory_id: str) -> Memory:
    try:
        memory = await node.replica.get(memory_id)
    except NotFound:
        raise _hidden(node, memory_id) from None
    if not may_read_memory(principal, memory.channels):
        raise _hidden(node, memory_id)
    return memory


async def _may_read_id(node: NodeContext, principal: Principal, memory_id: str) -> bool:
    try:
        await _readable(node, principal, memory_id)
    except NotFound:
        return False
    return True


async def _id_free_or_own(node: NodeContext, principal: Principal, memory_id: str) -> None:
    """A create with a chosen id: the id's memory, if any, must be one the caller may write (a
    deleted one takes a new incarnation); of anyone else's, only that the id is taken is said."""
    try:
        memory = await node.replica.get(memory_id)
    except NotFound:
        return
    if not may_write_memory(principal, memory.channels):
        raise MemoryExists(f"the id {memory_id!r} is taken; choose another")


async def _writable(node: NodeContext, principal: Principal, memory_id: str) -> Memory:
    try:
        memory = await node.replica.get(memory_id)
    except NotFound:
        raise _hidden(node, memory_id) from None
    channels = memory.channels
    if may_write_memory(principal, channels):
        return memory
    if not may_read_memory(principal, channels) and not any(principal.may_write(c) for c in channels):
        raise _hidden(node, memory_id)
    _require_write(principal, channels)
    return memory


def _require_write(principal: Principal, channels: tuple[str, ...]) -> None:
    if may_write_memory(principal, channels):
        return
    denied = [c for c in channels if not principal.may_write(c)]
    raise AccessDenied(
        f"{principal.name} may not write {', '.join(denied)}; a write needs write access to every "
        "channel of the memory"
    )


def _check_fits_kind(kind: Kind, body: Mapping[str, Any]) -> None:
    """Refuse the whole PATCH up front if any of its operations does not fit ``kind``."""
    needs: list[tuple[str, tuple[Kind, ...]]] = [
        ("content", REGISTER_KINDS),
        ("increment", ("counter",)),
        ("add_items", ("list",)),
        ("remove_items", ("list",)),
        ("append_message", ("conversation",)),
    ]
    for name, kinds in needs:
        if name in body and kind not in kinds:
            raise WrongKind(f"{name} applies to {' and '.join(kinds)} memories; this memory is a {kind}")


# -- request bodies ----------------------------------------------------------------------------

Check = Callable[[str, Any], Any]
"""Validates one JSON field: returns the value (possibly normalized) or raises InvalidInput."""


def _type_error(name: str, expected: str, value: Any) -> InvalidInput:
    got = "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)
    return InvalidInput(f"field {name!r} must be {expected}, got {got}")


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}


def _any(name: str, value: Any) -> Any:
    return value


def _string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _type_error(name, "a string", value)
    return value


def _id_or_null(name: str, value: Any) -> str | None:
    if value is None:
        return None
    return check_id(_string(name, value), name)


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _type_error(name, "true or false", value)
    return value


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(name, "an integer", value)
    return value


def _object(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _type_error(name, "an object", value)
    return value


def _array(name: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise _type_error(name, "an array", value)
    return value


def _string_array(name: str, value: Any) -> list[str]:
    for item in _array(name, value):
        if not isinstance(item, str):
            raise _type_error(f"{name}[]", "a string", item)
    return list(value)


def _kind(name: str, value: Any) -> Kind:
    if value not in KINDS:
        raise InvalidInput(f"field {name!r} must be one of {', '.join(KINDS)}; got {value!r}")
    kind: Kind = value
    return kind


def _message(name: str, value: Any) -> dict[str, str]:
    message = _object(name, value)
    if set(message) != {"role", "text"}:
        raise InvalidInput(f'field {name!r} must be {{"role": string, "text": string}}, got {value!r}')
    if not _string(f"{name}.role", message["role"]):
        raise InvalidInput(f"field '{name}.role' must not be empty")
    _string(f"{name}.text", message["text"])
    return message


def _memory_id_or_null(name: str, value: Any) -> str | None:
    return None if value is None else check_memory_id(_string(name, value), name)


_CREATE_FIELDS: dict[str, Check] = {
    "id": _memory_id_or_null,
    "content": _any,
    "kind": _kind,
    "user_id": _id_or_null,
    "agent_id": _id_or_null,
    "session_id": _id_or_null,
    "tenant_id": _id_or_null,
    "topics": _string_array,
    "shared": _boolean,
    "metadata": _object,
    "tags": _array,
}
_UPDATE_FIELDS: dict[str, Check] = {
    "content": _any,
    "metadata": _object,
    "remove_metadata": _string_array,
    "add_tags": _array,
    "remove_tags": _array,
}
_PATCH_FIELDS: dict[str, Check] = {
    **_UPDATE_FIELDS,
    "increment": _integer,
    "add_items": _array,
    "remove_items": _array,
    "append_message": _message,
}
_RESOLVE_FIELDS: dict[str, Check] = {"field": _string, "value": _any}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def _json_body(
    request: web.Request, fields: Mapping[str, Check], *, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The request's JSON object, every field checked; unknown and missing fields are refused."""
    raw = await request.read()
    if not raw.strip():
        raise InvalidInput("the request body must be a JSON object; it was empty")
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        got = _JSON_TYPES.get(type(body), "null")
        raise InvalidInput(f"the request body must be a JSON object, got {got}")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise InvalidInput(
            f"unknown field(s) {', '.join(map(repr, unknown))}; expected some of {', '.join(fields)}"
        )
    missing = [name for name in required if name not in body]
    if missing:
        raise InvalidInput(f"missing field(s) {', '.join(map(repr, missing))}")
    return {name: fields[name](name, value) for name, value in body.items()}


# -- path and query ----------------------------------------------------------------------------


def _memory_id(request: web.Request) -> str:
    return check_memory_id(request.match_info["id"], "memory id")


def _query(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, each at most once; unknown ones are refused (a typo must not widen a
    filter into 'everything')."""
    found: dict[str, str] = {}
    for name, value in request.query.items():
        if name in _AUTH_QUERY:
            continue
        if name not in allowed:
            expected = ", ".join(allowed) if allowed else "none"
            raise InvalidInput(f"unknown query parameter {name!r}; expected {expected}")
        if name in found:
            raise InvalidInput(f"query parameter {name!r} given more than once")
        found[name] = value
    return found


def _no_query(request: web.Request) -> None:
    _query(request, ())


def _name_param(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name)
    return None if value is None else check_id(value, name)


def _bool_param(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name, "false").lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise InvalidInput(f"query parameter {name!r} must be true or false, got {value!r}")


_INTEGER = re.compile(r"-?[0-9]{1,18}")


def _int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = query.get(name)
    if text is None:
        return default
    if not _INTEGER.fullmatch(text):  # int() would also take "٣", " 3" and "1_0"
        raise InvalidInput(f"query parameter {name!r} must be an integer, got {text!r:.40}")
    value = int(text)
    if not low <= value <= high:
        raise InvalidInput(f"query parameter {name!r} must be between {low} and {high}, got {value}")
    return value


def _history_json(entry: HistoryEntry, previous: HistoryEntry | None, conversation: bool) -> dict[str, Any]:
    """An entry as JSON. A conversation's entry whose messages extend the previous entry's carries
    only the new ones, with ``content_from`` (how many came before them), so a long conversation's
    history grows with its messages, not with their square."""
    data = asdict(entry)
    data["tags"] = list(entry.tags)
    content, before = entry.content, previous.content if previous is not None else None
    if (
        conversation
        and isinstance(content, list)
        and isinstance(before, list)
        and len(before) <= len(content)
        and content[: len(before)] == before
    ):
        data["content"] = content[len(before) :]
        data["content_from"] = len(before)
    return data
