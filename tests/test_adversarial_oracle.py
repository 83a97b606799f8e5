"""No metadata oracle, against a real `crdtmem serve` process: what a token cannot read, it cannot
learn about either (its channels, its vectors, whether a memory id exists)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.processes import ServerProcess

MALLORY = "mallory-user-token-0001"
BOB = "bob-user-token-00000001"
OPERATOR = "operator-token-00000001"
U1, U2 = "user:u1:memories", "user:u2:memories"


def _serve(procs: list[ServerProcess], tmp: Path) -> ServerProcess:
    tokens = tmp / "tokens.json"
    entries = [
        {"token": MALLORY, "principal": "user:mallory", "read": [U1], "write": [U1]},
        {"token": BOB, "principal": "user:bob", "read": [U2, "topic:*:updates"], "write": [U2]},
        {"token": OPERATOR, "principal": "user:ops", "read": ["*"], "write": []},
    ]
    tokens.write_text(json.dumps({"tokens": entries}))
    proc = ServerProcess(tmp, "hub", tokens=tokens)
    procs.append(proc.start())
    return proc


async def _call(
    session: aiohttp.ClientSession, method: str, url: str, token: str, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.request(method, url, json=body, headers=headers) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()


async def test_status_shows_a_principal_only_its_own_channels(procs, session, tmp_path):
    hub = _serve(procs, tmp_path)
    memories = f"{hub.url}/v1/memories"
    assert (await _call(session, "POST", memories, MALLORY, {"content": "m", "user_id": "u1"}))[0] == 201
    bob_memory = {"content": "b", "user_id": "u2", "topics": ["secret-project"]}
    assert (await _call(session, "POST", memories, BOB, bob_memory))[0] == 403  # not every channel
    assert (await _call(session, "POST", memories, BOB, {"content": "b", "user_id": "u2"}))[0] == 201

    status, everything = await _call(session, "GET", f"{hub.url}/v1/status", OPERATOR)
    assert status == 200 and {U1, U2} <= set(everything["channels"]) and "peers" in everything
    assert everything["memories"] == 2

    status, mallorys = await _call(session, "GET", f"{hub.url}/v1/status", MALLORY)
    assert status == 200 and mallorys["replica_id"] == "hub"
    assert mallorys["channels"] == [U1] and set(mallorys["version_vectors"]) == {U1}
    assert not {"memories", "peers", "links", "trust", "pending_deltas"} & set(mallorys)
    assert "u2" not in json.dumps(mallorys)

    status, bobs = await _call(session, "GET", f"{hub.url}/v1/status", BOB)
    assert bobs["channels"] == [U2] and set(bobs["version_vectors"]) == {U2}

    async with session.get(f"{hub.url}/metrics", headers={"Authorization": f"Bearer {MALLORY}"}) as r:
        assert r.status == 403 and (await r.json())["error"] == "AccessDenied"
    async with session.get(f"{hub.url}/metrics", headers={"Authorization": f"Bearer {OPERATOR}"}) as r:
        assert r.status == 200 and "crdtmem_memories" in await r.text()


async def test_a_memory_the_caller_cannot_read_answers_exactly_as_no_memory(procs, session, tmp_path):
    """Every REST operation on another tenant's memory id answers what it answers for an id that
    was never used, word for word (the id aside)."""
    hub = _serve(procs, tmp_path)
    base = f"{hub.url}/v1/memories"
    status, bobs = await _call(session, "POST", base, BOB, {"content": "bob's", "user_id": "u2"})
    assert status == 201
    hidden, missing = bobs["id"], "0" * 32
    operations: list[tuple[str, str, Any]] = [
        ("GET", "/{id}", None),
        ("PATCH", "/{id}", {"content": "overwritten"}),
        ("PATCH", "/{id}", {"metadata": {"k": 1}, "add_tags": ["x"]}),
        ("DELETE", "/{id}", None),
        ("GET", "/{id}/history", None),
        ("POST", "/{id}/resolve", {"field": "content", "value": "x"}),
    ]
    for method, path, body in operations:
        answers = []
        for memory_id in (hidden, missing):
            status, answer = await _call(session, method, base + path.format(id=memory_id), MALLORY, body)
            answers.append((status, json.dumps(answer).replace(memory_id, "ID")))
        assert answers[0] == answers[1], (method, path, answers)
        assert answers[0][0] == 404, answers
    status, conflicts = await _call(session, "GET", f"{hub.url}/v1/conflicts?memory_id={hidden}", MALLORY)
    status_missing, conflicts_missing = await _call(
        session, "GET", f"{hub.url}/v1/conflicts?memory_id={missing}", MALLORY
    )
    assert (status, json.dumps(conflicts).replace(hidden, "ID")) == (
        status_missing,
        json.dumps(conflicts_missing).replace(missing, "ID"),
    )
    # and bob's memory is untouched
    status, still = await _call(session, "GET", f"{base}/{hidden}", BOB)
    assert status == 200 and still["content"] == "bob's" and not still["deleted"] and still["metadata"] == {}
