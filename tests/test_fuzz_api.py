"""Property-based fuzzing of a real ``crdtmem serve`` process from the OpenAPI document it serves.

schemathesis reads ``GET /openapi.json`` from the running node and, for every operation (REST,
search, the event feed, status, metrics, sync pull, push and the WebSocket route), sends requests
generated from the declared schemas, valid ones and deliberately invalid ones, as an admin, as a
principal restricted to one tenant channel, and without a token. Every response must:

- not be a server error (5xx);
- have a status, content type, headers and body that the document declares for that operation;
- be refused (4xx) when the request broke the declared schema;
- if it is an error, be a JSON ``{"error", "message"}`` body.

Sync pushes carry generated ``crdtmem.deltas`` payloads: valid signed ones of an origin the caller
may introduce, the same mutated, arbitrary msgpack and arbitrary bytes. Afterwards the node is
still up and serves a write and a read.

The default run draws a few examples per operation; ``-m soak`` runs many more.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from crdtmem import Replica
from crdtmem.engine import payload as wire
from crdtmem.server import openapi
from tests.conftest import exploring
from tests.support.processes import ServerProcess

ADMIN = "fuzz-admin-token-000000001"
TENANT = "fuzz-tenant-token-00000001"
TOKENS = {"admin": ADMIN, "tenant": TENANT, "none": None}
ACME = "tenant:acme:shared"
DEFAULT_EXAMPLES = 6
SOAK_EXAMPLES = 400
REQUEST_TIMEOUT = 5.0
EVENTS_TIMEOUT = 0.3  # an event stream never ends: read it this long


# -- payloads for /v1/sync/push ---------------------------------------------------------------------


def _valid_payloads() -> list[bytes]:
    """Signed payloads of origins the tokens may introduce (the tenant's phone; a device of the
    admin's), and an unsigned version-1 one."""

    async def make() -> list[bytes]:
        out = []
        async with Replica(None, replica_id="acme-phone") as phone:
            memory = await phone.add("shared note", tenant_id="acme")
            await phone.update(memory.id, content={"json": [1, 2]}, metadata={"k": "v"})
            out.append(await phone.export_since([ACME]))
            out.append(await phone.export_since([ACME], version=1))
        async with Replica(None, replica_id="admin-laptop") as laptop:
            await laptop.add("u1's note", user_id="u1", topics=["t1"])
            out.append(await laptop.export_since(["user:u1:memories", "topic:t1:updates"]))
        return out

    return asyncio.run(make())


VALID_PAYLOADS = _valid_payloads()


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID_PAYLOADS)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    return bytes(data)


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
_payload_shaped = st.fixed_dictionaries(
    {"format": st.just(wire.FORMAT), "v": st.sampled_from([1, 2]), "from": st.text(max_size=10)},
    optional={
        "deltas": st.lists(st.lists(_values, max_size=9), max_size=3),
        "vectors": _values,
        "keys": _values,
    },
)
DELTAS_BODIES = st.one_of(
    st.sampled_from(VALID_PAYLOADS),
    _mutated(),
    (_values | _payload_shaped).map(lambda v: bytes(msgpack.packb(v, use_bin_type=True))),
    st.binary(max_size=512),
)
schemathesis.openapi.media_type("application/x-crdtmem-deltas", DELTAS_BODIES)


@schemathesis.serializer("application/x-msgpack")
def _msgpack(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    try:
        return bytes(msgpack.packb(value, use_bin_type=True))
    except (OverflowError, TypeError, ValueError):  # an int msgpack cannot hold: send it as JSON text
        return json.dumps(value).encode()


# -- checks -----------------------------------------------------------------------------------------


@schemathesis.check
def error_bodies_are_json(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx/5xx answer is ``{"error": str, "message": str}`` JSON (a 404 for a dashboard
    asset that does not exist included)."""
    if response.status_code < 400:
        return None
    values = {k.lower(): v for k, v in response.headers.items()}.get("content-type", [""])
    value = values[0] if isinstance(values, list) else values
    assert value.startswith("application/json"), f"{response.status_code} answered as {value!r}"
    body = json.loads(response.content)
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), body
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    missing_required_header,
    error_bodies_are_json,
]
AUTH_AND_METHOD_CHECKS = [ignored_auth, unsupported_method, allow_header_conformance]
"""Each sends more requests (without the token, with other methods): run as the admin only."""


# -- the node ---------------------------------------------------------------------------------------


def _tokens_file(tmp: Path) -> Path:
    path = tmp / "tokens.json"
    entries = [
        {
            "token": ADMIN,
            "principal": "user:admin",
            "read": ["*"],
            "write": ["*"],
            "origins": ["admin-laptop"],
        },
        {
            "token": TENANT,
            "principal": "user:acme-agent",
            "read": [ACME],
            "write": [ACME],
            "origins": ["acme-phone"],
            "unsigned": ["acme-phone"],
        },
    ]
    path.write_text(json.dumps({"tokens": entries}))
    return path


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("fuzzed")
    proc = ServerProcess(tmp, "fuzzed", tokens=_tokens_file(tmp)).start()
    try:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        seeds: list[dict[str, Any]] = [
            {"id": "known", "content": "a fact", "user_id": "u1", "tags": ["t"], "metadata": {"k": 1}},
            {"id": "acme-list", "kind": "list", "content": [1, "two"], "tenant_id": "acme"},
            {"id": "acme-counter", "kind": "counter", "content": 3, "tenant_id": "acme"},
            {"id": "chat", "kind": "conversation", "user_id": "u1"},
        ]
        for body in seeds:
            response = requests.post(f"{proc.url}/v1/memories", json=body, headers=headers, timeout=10)
            assert response.status_code == 201, response.text
        yield proc
    finally:
        proc.stop()


def _config(examples: int, deterministic: bool) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "generation": {"max-examples": examples, "mode": "all", "deterministic": deterministic},
            "phases": {"stateful": {"enabled": False}},
            "request-timeout": REQUEST_TIMEOUT,
            "suppress-health-check": ["all"],
            "operations": [
                {"include-path": "/v1/events", "request-timeout": EVENTS_TIMEOUT, "max-stream-events": 5}
            ],
        }
    )


# The document the node serves is built by crdtmem.server.openapi; test_the_served_document_is_fuzzed
# checks that the running node serves exactly this one.
# The default run draws the same examples every time (see tests/conftest.py); the soak draws fresh ones.
served = schemathesis.openapi.from_dict(
    openapi.spec(), config=_config(DEFAULT_EXAMPLES, deterministic=not exploring())
)
soaked = schemathesis.openapi.from_dict(openapi.spec(), config=_config(SOAK_EXAMPLES, deterministic=False))


@pytest.fixture(scope="module", params=list(TOKENS))
def auth(request: pytest.FixtureRequest) -> dict[str, str]:
    """Fuzzed as each of an admin, a tenant's agent and nobody."""
    token = TOKENS[request.param]
    return {"Authorization": f"Bearer {token}"} if token else {}


def _call(case: Case, node: ServerProcess, auth: dict[str, str]) -> None:
    if case.headers and not auth:
        case.headers.pop("Authorization", None)
    extra = AUTH_AND_METHOD_CHECKS if auth.get("Authorization") == f"Bearer {ADMIN}" else []
    case.call_and_validate(base_url=node.url, headers=auth, checks=CHECKS + extra)


def test_the_served_document_is_fuzzed(node: ServerProcess) -> None:
    assert requests.get(f"{node.url}/openapi.json", timeout=10).json() == openapi.spec()


@served.parametrize()
def test_every_operation_answers_as_declared(case: Case, node: ServerProcess, auth: dict[str, str]) -> None:
    _call(case, node, auth)


@pytest.mark.soak
@soaked.parametrize()
def test_soak_every_operation_answers_as_declared(
    case: Case, node: ServerProcess, auth: dict[str, str]
) -> None:
    _call(case, node, auth)


def test_the_node_keeps_serving(node: ServerProcess) -> None:
    """Runs after the fuzzing above (same module, same node): the node took every request without
    a server error or a traceback in its log, and still writes and reads."""
    assert node.alive
    log = node.log.read_text()
    statuses = re.findall(r"crdtmem\.access \S+ \S+ (\d{3}) ", log)
    assert len(statuses) > 300, f"only {len(statuses)} requests reached the node"
    print(f"{len(statuses)} requests:", dict(sorted(Counter(statuses).items())))  # shown with -s
    assert not [s for s in statuses if s.startswith("5")], "the node answered 5xx"
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]
    headers = {"Authorization": f"Bearer {ADMIN}"}
    created = requests.post(
        f"{node.url}/v1/memories",
        json={"content": "after the fuzz", "user_id": "u1"},
        headers=headers,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    read = requests.get(f"{node.url}/v1/memories/{created.json()['id']}", headers=headers, timeout=10)
    assert read.status_code == 200 and read.json()["content"] == "after the fuzz"
    assert requests.get(f"{node.url}/healthz", timeout=10).json()["ok"] is True
