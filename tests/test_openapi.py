"""GET /openapi.json describes exactly the routes the node serves, and real responses match it."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from crdtmem import Limits, Replica
from crdtmem.access import TokenTable
from crdtmem.server import Node

# app.py stores the principal under a str key, which aiohttp >= 3.14 warns about once per process.

ADMIN = "admin-token-0123456789"
ACME = "acme-token-0123456789"
TOKENS = TokenTable.from_json(
    {
        "tokens": [
            {"token": ADMIN, "principal": "user:admin", "read": ["*"], "write": ["*"], "origins": ["*"]},
            {
                "token": ACME,
                "principal": "user:acme-agent",
                "read": ["tenant:acme:shared"],
                "write": ["tenant:acme:shared"],
            },
        ]
    }
)
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


# -- a small JSON Schema (2020-12 subset) validator ----------------------------------------------


class Validator:
    """Enough of JSON Schema for the spec: $ref, allOf/anyOf/oneOf, type (incl. lists), enum, const,
    properties/required/additionalProperties, items, minimum/maximum, minLength, pattern,
    minProperties."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec

    def resolve(self, ref: str) -> dict[str, Any]:
        assert ref.startswith("#/"), ref
        node: Any = self.spec
        for part in ref[2:].split("/"):
            node = node[part]
        return dict(node)

    def errors(self, value: Any, schema: dict[str, Any], where: str = "$") -> list[str]:
        found: list[str] = []
        if "$ref" in schema:
            found += self.errors(value, self.resolve(schema["$ref"]), where)
        for sub in schema.get("allOf", []):
            found += self.errors(value, sub, where)
        if "anyOf" in schema and all(self.errors(value, s, where) for s in schema["anyOf"]):
            found.append(f"{where}: matches none of anyOf")
        if "oneOf" in schema and sum(not self.errors(value, s, where) for s in schema["oneOf"]) != 1:
            found.append(f"{where}: does not match exactly one of oneOf")
        if "const" in schema and value != schema["const"]:
            found.append(f"{where}: {value!r} != const {schema['const']!r}")
        if "enum" in schema and value not in schema["enum"]:
            found.append(f"{where}: {value!r} not in {schema['enum']}")
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(_is_type(value, t) for t in types):
                return [*found, f"{where}: {value!r:.60} is not {'/'.join(types)}"]
        if isinstance(value, dict):
            for name in schema.get("required", []):
                if name not in value:
                    found.append(f"{where}: missing {name!r}")
            properties = schema.get("properties", {})
            for name, item in value.items():
                if name in properties:
                    found += self.errors(item, properties[name], f"{where}.{name}")
                elif schema.get("additionalProperties") is False:
                    found.append(f"{where}: unexpected property {name!r}")
                elif isinstance(schema.get("additionalProperties"), dict):
                    found += self.errors(item, schema["additionalProperties"], f"{where}.{name}")
            if len(value) < schema.get("minProperties", 0):
                found.append(f"{where}: fewer than {schema['minProperties']} properties")
        if isinstance(value, list) and "items" in schema:
            for i, item in enumerate(value):
                found += self.errors(item, schema["items"], f"{where}[{i}]")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                found.append(f"{where}: {value} < minimum {schema['minimum']}")
            if "maximum" in schema and value > schema["maximum"]:
                found.append(f"{where}: {value} > maximum {schema['maximum']}")
        if isinstance(value, str):
            if len(value) < schema.get("minLength", 0):
                found.append(f"{where}: shorter than {schema['minLength']}")
            if "pattern" in schema and not re.search(schema["pattern"], value):
                found.append(f"{where}: {value!r} does not match {schema['pattern']}")
        return found


def _is_type(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, {"string": str, "array": list, "object": dict}[kind])


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with Node(Replica(tmp_path / "a.db", replica_id="a"), tokens=TOKENS) as running:
        yield running


@pytest.fixture
async def spec(node: Node, session: aiohttp.ClientSession) -> dict[str, Any]:
    async with session.get(node.url + "/openapi.json") as response:  # public: no token
        assert response.status == 200
        assert response.content_type == "application/json"
        return dict(await response.json())


def walk_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        refs = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return refs + [r for value in node.values() for r in walk_refs(value)]
    if isinstance(node, list):
        return [r for item in node for r in walk_refs(item)]
    return []


# -- the document --------------------------------------------------------------------------------


def test_the_validator_is_not_vacuous() -> None:
    spec = {
        "components": {
            "schemas": {
                "A": {"type": "object", "required": ["x"], "properties": {"x": {"type": ["integer", "null"]}}}
            }
        }
    }
    check = Validator(spec)
    schema = {"$ref": "#/components/schemas/A"}
    assert check.errors({"x": 1}, schema) == [] and check.errors({"x": None}, schema) == []
    assert check.errors({}, schema) and check.errors({"x": True}, schema) and check.errors([], schema)
    assert check.errors({"y": 1}, {"type": "object", "properties": {}, "additionalProperties": False})
    assert check.errors(["a", 1], {"type": "array", "items": {"type": "string"}})
    assert check.errors("b", {"enum": ["a"]}) and check.errors(1, {"allOf": [{"type": "string"}]})


async def test_spec_is_openapi_31_and_every_ref_resolves(spec: dict[str, Any]) -> None:
    assert spec["openapi"] == "3.1.0"
    assert spec["info"]["title"] and spec["info"]["version"]
    check = Validator(spec)
    for ref in walk_refs(spec):
        check.resolve(ref)
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                assert operation["responses"], f"{method} {path} declares no responses"
                assert operation.get("operationId"), f"{method} {path} has no operationId"
    ids = [
        op["operationId"] for item in spec["paths"].values() for m, op in item.items() if m in HTTP_METHODS
    ]
    assert len(ids) == len(set(ids))


async def test_every_registered_route_is_described_and_nothing_else(node: Node, spec: dict[str, Any]) -> None:
    assert node._runner is not None
    registered = set()
    for route in node._runner.app.router.routes():
        if route.method == "HEAD":  # aiohttp adds HEAD to every GET route
            continue
        registered.add((route.resource.canonical, route.method.lower()))  # type: ignore[union-attr]
    described = {
        (path, method) for path, item in spec["paths"].items() for method in item if method in HTTP_METHODS
    }
    assert registered == described, (
        f"registered but not described: {sorted(registered - described)}; "
        f"described but not registered: {sorted(described - registered)}"
    )
    for path in (
        "/v1/memories",
        "/v1/events",
        "/v1/status",
        "/metrics",
        "/v1/sync/pull",
        "/v1/sync/push",
        "/v1/sync/ws",
        "/healthz",
        "/openapi.json",
    ):
        assert path in spec["paths"]


# -- real responses against the declared schemas -------------------------------------------------


class Checked:
    """Calls the node and checks each response against the operation it hits in the spec."""

    def __init__(self, spec: dict[str, Any], session: aiohttp.ClientSession, url: str):
        self.spec = spec
        self.validator = Validator(spec)
        self.session = session
        self.url = url
        self.checked: set[tuple[str, str, str]] = set()

    def operation(self, method: str, template: str) -> dict[str, Any]:
        return dict(self.spec["paths"][template][method.lower()])

    def response_schema(
        self, method: str, template: str, status: int, content_type: str
    ) -> dict[str, Any] | None:
        responses = self.operation(method, template)["responses"]
        assert str(status) in responses, f"{method} {template} answered {status}, which it does not declare"
        response = responses[str(status)]
        if "$ref" in response:
            response = self.validator.resolve(response["$ref"])
        content = response.get("content", {})
        assert content_type in content, f"{method} {template} {status}: {content_type} not declared"
        schema = content[content_type].get("schema")
        return dict(schema) if schema is not None else None

    def request_errors(self, method: str, template: str, body: Any) -> list[str]:
        request = self.operation(method, template)["requestBody"]
        return self.validator.errors(body, request["content"]["application/json"]["schema"])

    async def call(
        self,
        method: str,
        template: str,
        *,
        token: str | None = ADMIN,
        body: Any = None,
        status: int = 200,
        query: str = "",
        **path: str,
    ) -> Any:
        if body is not None:
            assert self.request_errors(method, template, body) == [], "the test sends an undeclared body"
        url = self.url + template.format(**path) + query
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, url, json=body, headers=headers) as response:
            assert response.status == status, await response.text()
            schema = self.response_schema(method, template, response.status, response.content_type)
            data = (
                await response.json()
                if response.content_type == "application/json"
                else await response.text()
            )
        if schema is not None:
            assert self.validator.errors(data, schema) == [], f"{method} {template} {status}: {data}"
        self.checked.add((method, template, str(status)))
        return data


async def test_real_responses_match_the_declared_schemas(
    node: Node, session: aiohttp.ClientSession, spec: dict[str, Any]
) -> None:
    api = Checked(spec, session, node.url)
    one = "/v1/memories/{id}"
    created = await api.call(
        "POST",
        "/v1/memories",
        status=201,
        body={
            "content": "v1",
            "kind": "fact",
            "user_id": "alice",
            "tenant_id": "acme",
            "shared": True,
            "topics": ["ui"],
            "metadata": {"k": 1},
            "tags": ["t"],
            "agent_id": "phone",
            "session_id": "s",
        },
    )
    memory_id = created["id"]
    counter = await api.call("POST", "/v1/memories", status=201, body={"kind": "counter", "content": 3})
    await api.call("POST", "/v1/memories", status=201, body={"kind": "list", "content": [1, {"a": 2}]})
    chat = await api.call("POST", "/v1/memories", status=201, body={"kind": "conversation"})
    await api.call("PATCH", one, id=chat["id"], body={"append_message": {"role": "user", "text": "hi"}})
    await api.call("GET", one, id=memory_id)
    await api.call("PATCH", one, id=memory_id, body={"content": "v2", "add_tags": ["u"]})
    listed = await api.call("GET", "/v1/memories")
    assert listed["count"] == 4

    # a conflict, so the conflict list and resolve carry real data
    channels = list(created["channels"])
    async with Replica(replica_id="b") as other:
        await other.apply(await node.replica.export_since(channels))
        await other.update(memory_id, content="from b")
        await api.call("PATCH", one, id=memory_id, body={"content": "from a"})
        payload = await other.export_since(channels, node.replica.version_vectors(channels))
    async with session.post(
        node.url + "/v1/sync/push", data=payload, headers={"Authorization": f"Bearer {ADMIN}"}
    ) as response:
        assert response.status == 200
        push = await response.json()
        assert (
            Validator(spec).errors(
                push, api.response_schema("POST", "/v1/sync/push", 200, "application/json") or {}
            )
            == []
        )
    conflicts = await api.call("GET", "/v1/conflicts")
    assert len(conflicts["conflicts"]) == 1
    await api.call(
        "POST", "/v1/memories/{id}/resolve", id=memory_id, body={"field": "content", "value": "v3"}
    )
    await api.call("GET", "/v1/memories/{id}/history", id=memory_id)
    await api.call("DELETE", one, id=memory_id)
    forgotten = await api.call("DELETE", one, id=counter["id"], query="?purge=true")
    assert forgotten == {"id": counter["id"], "forgotten": True}
    await api.call("GET", "/v1/status")
    await api.call("GET", "/metrics")
    await api.call("GET", "/healthz", token=None)
    await api.call("GET", "/openapi.json", token=None)

    # errors are declared too, with the Error schema
    await api.call("GET", one, id="nope", status=404)
    await api.call(
        "PATCH",
        one,
        id=chat["id"],
        body={"append_message": {"role": "user", "text": "x"}, "increment": 1},
        status=400,
    )
    await api.call("GET", "/v1/memories", token=None, status=401)
    await api.call("POST", "/v1/memories", token=ACME, body={"content": "x", "user_id": "bob"}, status=403)
    await api.call(
        "POST",
        "/v1/memories/{id}/resolve",
        id=chat["id"],
        body={"field": "content", "value": "x"},
        status=409,
    )
    await api.call("GET", "/v1/events", query="?channel=user:bob:memories", token=ACME, status=403)
    # over the node's limits: 413, declared, with the limit named
    too_many = [f"t{i}" for i in range(Limits().topics + 1)]
    refused = await api.call("POST", "/v1/memories", body={"content": "x", "topics": too_many}, status=413)
    assert refused["limit"] == "topics"
    await api.call("PATCH", one, id=chat["id"], body={"add_tags": [f"g{i}" for i in range(1001)]}, status=413)
    assert len(api.checked) >= 20


async def test_every_operation_that_takes_a_body_declares_413(spec: dict[str, Any]) -> None:
    """Any body can be over a limit (its size, or a count in it): each such operation says so."""
    with_body = [
        (method, path)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS and "requestBody" in operation
    ]
    assert len(with_body) >= 5
    undeclared = [f"{m} {p}" for m, p in with_body if "413" not in spec["paths"][p][m]["responses"]]
    assert undeclared == []


async def test_event_stream_messages_match_the_memory_event_schema(
    node: Node, session: aiohttp.ClientSession, spec: dict[str, Any]
) -> None:
    validator = Validator(spec)
    message_schema = validator.resolve(
        spec["paths"]["/v1/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]["schema"][
            "$ref"
        ]
    )
    event_schema = message_schema["properties"]["data"]["contentSchema"]
    async with session.get(node.url + "/v1/events", headers={"Authorization": f"Bearer {ADMIN}"}) as response:
        memory = await node.replica.add("x", user_id="alice")
        await node.replica.update(memory.id, content="y", metadata={"k": [1]})
        await node.replica.delete(memory.id)
        await node.replica.forget(memory.id)
        seen = []
        while len(seen) < 4:
            line = (await response.content.readline()).decode()
            if line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                assert validator.errors(data, event_schema) == [], data
                seen.append(data["event_type"])
        assert seen == ["create", "update", "delete", "forgotten"]
        forgotten = validator.resolve("#/components/schemas/MemoryForgotten")
        assert validator.errors(data, forgotten) == []
        assert validator.errors({**data, "memory": {"content": "x"}}, forgotten)  # it carries no content
    # and the request bodies the spec declares refuse what the server refuses
    checked = Checked(spec, session, node.url)
    assert checked.request_errors("POST", "/v1/memories", {"content": "x", "colour": "red"})
    assert checked.request_errors("PATCH", "/v1/memories/{id}", {})
    assert checked.request_errors("POST", "/v1/memories/{id}/resolve", {"field": "content"})
