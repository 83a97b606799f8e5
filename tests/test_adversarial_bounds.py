"""Hostile sizes against a real `crdtmem serve` process: every size bounded, every cost linear.

Each hostile request is one a review found, or the worst of its kind: it is refused with a JSON
``413`` (or ``400``) naming the bound it passed, nothing of it is written, and a bystander with
another token keeps being served while hostile requests run.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import aiohttp

from crdtmem import Limits, Replica
from crdtmem.engine import payload as wire
from tests.support.processes import ServerProcess

HOSTILE = "hostile-user-token-00001"
BYSTANDER = "bystander-user-token-001"
U1, U2 = "user:u1:memories", "user:u2:memories"


def _serve(procs: list[ServerProcess], tmp: Path, *extra: str) -> ServerProcess:
    tokens = tmp / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                "tokens": [
                    {
                        "token": HOSTILE,
                        "principal": "user:mallory",
                        "read": [U1],
                        "write": [U1],
                        "origins": ["wide"],
                    },
                    {"token": BYSTANDER, "principal": "user:bob", "read": [U2], "write": [U2]},
                ]
            }
        )
    )
    # a write rate that never refuses here: the bounds, not the rate limit, are under test
    proc = ServerProcess(tmp, "hub", tokens=tokens, extra=["--write-rate", "100000", *extra])
    procs.append(proc.start())
    return proc


async def _call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    token: str,
    body: Any = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    encoded = raw if raw is not None else json.dumps(body).encode() if body is not None else None
    data = io.BytesIO(encoded) if encoded is not None else None  # large bodies: aiohttp wants a stream
    if data is not None:
        headers["Content-Type"] = "application/json"
    async with session.request(method, url, data=data, headers=headers) as response:
        assert response.content_type == "application/json", (response.status, await response.text())
        return response.status, await response.json()


def _refused(status: int, body: Any, limit: str, code: int = 413) -> None:
    assert status == code, (status, body)
    assert body["error"] == "LimitExceeded" and body["limit"] == limit and limit in body["message"], body
    assert isinstance(body["max"], int)


async def test_twenty_thousand_metadata_keys_are_refused_while_a_bystander_is_served(
    procs, session, tmp_path
):
    """The request of the review (318 KB, 20,000 metadata keys, 30 s of event loop) answers 413
    naming ``metadata_keys``; a bystander's requests all succeed, interleaved with the hostile ones."""
    hub = _serve(procs, tmp_path)
    memories = f"{hub.url}/v1/memories"
    status, mine = await _call(session, "POST", memories, BYSTANDER, {"content": "bob's", "user_id": "u2"})
    assert status == 201
    hostile_body = {"content": "x", "user_id": "u1", "metadata": {f"key-{i:05d}": i for i in range(20_000)}}
    assert len(json.dumps(hostile_body)) > 300_000
    hostile_done = asyncio.Event()
    served: list[int] = []

    async def bystander() -> None:
        n = 0
        while not hostile_done.is_set():
            n += 1
            if n % 2:
                status, _ = await _call(session, "GET", f"{memories}/{mine['id']}", BYSTANDER)
            else:
                change = {"metadata": {"seen": n}}
                status, _ = await _call(session, "PATCH", f"{memories}/{mine['id']}", BYSTANDER, change)
            served.append(status)

    async def hostile() -> list[tuple[int, Any]]:
        try:
            return [await _call(session, "POST", memories, HOSTILE, hostile_body) for _ in range(10)]
        finally:
            hostile_done.set()

    watcher = asyncio.ensure_future(bystander())
    answers = await hostile()
    await watcher
    for status, body in answers:
        _refused(status, body, "metadata_keys")
    # a refusal parses 318 KB; a bystander's PATCH waits for its fsync: on a loaded machine either
    # may be the slower, so half as many bystander requests as hostile ones shows they interleave
    assert set(served) == {200} and len(served) >= len(answers) // 2, served
    status, listed = await _call(session, "GET", memories, HOSTILE)
    assert status == 200 and listed["count"] == 0  # nothing of the hostile requests was written


async def test_every_size_is_bounded_and_named(procs, session, tmp_path):
    """One hostile request per bound, each past it by a little or a lot: a JSON 413 naming the bound,
    nothing written. Then the same kinds of request just within the bounds succeed."""
    hub = _serve(
        procs, tmp_path, "--limit", "metadata_keys=50", "--limit", "tags=40", "--limit", "list_items=30"
    )
    memories = f"{hub.url}/v1/memories"
    ok, fact = await _call(session, "POST", memories, HOSTILE, {"content": "a fact", "user_id": "u1"})
    ok2, items = await _call(
        session, "POST", memories, HOSTILE, {"kind": "list", "content": [], "user_id": "u1"}
    )
    ok3, chat = await _call(session, "POST", memories, HOSTILE, {"kind": "conversation", "user_id": "u1"})
    assert (ok, ok2, ok3) == (201, 201, 201)
    big = "x" * (1024 * 1024 + 1)  # one byte past value_bytes, well within body_bytes
    refused: list[tuple[str, str, str, Any]] = [
        (
            "POST",
            "",
            "metadata_keys",
            {"content": "x", "user_id": "u1", "metadata": {f"k{i}": i for i in range(51)}},
        ),
        ("POST", "", "tags", {"content": "x", "user_id": "u1", "tags": [f"t{i}" for i in range(41)]}),
        ("POST", "", "topics", {"content": "x", "user_id": "u1", "topics": [f"t{i}" for i in range(33)]}),
        ("POST", "", "list_items", {"kind": "list", "user_id": "u1", "content": list(range(31))}),
        ("POST", "", "value_bytes", {"content": big, "user_id": "u1"}),
        ("POST", "", "value_bytes", {"content": "x", "user_id": "u1", "metadata": {"k": big}}),
        ("POST", "", "value_bytes", {"content": "x", "user_id": "u1", "tags": [[big]]}),
        ("PATCH", f"/{fact['id']}", "metadata_keys", {"metadata": {f"k{i}": i for i in range(20_000)}}),
        ("PATCH", f"/{fact['id']}", "metadata_keys", {"remove_metadata": [f"k{i}" for i in range(20_000)]}),
        ("PATCH", f"/{fact['id']}", "tags", {"add_tags": [f"t{i}" for i in range(20_000)]}),
        ("PATCH", f"/{fact['id']}", "tags", {"remove_tags": [f"t{i}" for i in range(20_000)]}),
        ("PATCH", f"/{items['id']}", "list_items", {"add_items": list(range(20_000))}),
        ("PATCH", f"/{items['id']}", "list_items", {"remove_items": list(range(20_000))}),
        ("PATCH", f"/{chat['id']}", "value_bytes", {"append_message": {"role": "user", "text": big}}),
    ]
    for method, path, limit, body in refused:
        status, answer = await _call(session, method, memories + path, HOSTILE, body)
        _refused(status, answer, limit)
    # bounds on what a memory holds: adding in small steps stops at the bound
    for step in range(5):
        status, answer = await _call(
            session,
            "PATCH",
            f"{memories}/{fact['id']}",
            HOSTILE,
            {
                "metadata": {f"s{step}-{i}": i for i in range(12)},
                "add_tags": [f"s{step}-{i}" for i in range(10)],
            },
        )
        if step < 4:
            assert status == 200, answer
    _refused(status, answer, "metadata_keys")  # 60 keys would pass 50
    status, answer = await _call(
        session, "PATCH", f"{memories}/{fact['id']}", HOSTILE, {"add_tags": ["one more"]}
    )
    _refused(status, answer, "tags")  # four steps added 40 tags: the bound, reached
    # the body as a whole
    status, answer = await _call(
        session, "POST", memories, HOSTILE, raw=b'{"content": "' + b"x" * (9 << 20) + b'"}'
    )
    _refused(status, answer, "body_bytes")
    # nesting: refused as invalid, with the depth named
    deep: Any = "x"
    for _ in range(100):
        deep = [deep]
    status, answer = await _call(session, "POST", memories, HOSTILE, {"content": deep, "user_id": "u1"})
    assert status == 400 and "64 deep" in answer["message"], answer
    # nothing of any refused request was written
    status, now = await _call(session, "GET", f"{memories}/{fact['id']}", HOSTILE)
    assert len(now["metadata"]) == 48 and not any(k.startswith("k") for k in now["metadata"])
    status, listed = await _call(session, "GET", memories, HOSTILE)
    assert listed["count"] == 3


async def test_a_pushed_memory_past_twice_the_bounds_is_rejected_before_it_is_read(procs, session, tmp_path):
    """Deltas made elsewhere are bounded too: a push creating a memory of 5,000 metadata keys (made
    by a replica with larger bounds; 350 KB) is rejected and counted, nothing of it stored; one of
    1,500 keys (within twice the bound) is taken."""
    hub = _serve(procs, tmp_path)
    async with Replica(None, replica_id="wide", limits=Limits(metadata_keys=5_000)) as wide:
        payloads = []
        for keys in (5_000, 1_500):
            memory = await wide.add("wide", user_id="u1", metadata={f"k{i}": i for i in range(keys)})
            deltas = [d for d in wide.store.deltas_since([U1], {}) if d.doc_id == memory.id]
            payloads.append((memory.id, wire.encode(wire.Payload("wide", deltas, {}, wide.keys_for(deltas)))))
    headers = {"Authorization": f"Bearer {HOSTILE}"}
    answers = []
    for _, payload in payloads:
        async with session.post(f"{hub.url}/v1/sync/push", data=payload, headers=headers) as response:
            assert response.status == 200
            answers.append(await response.json())
    assert (answers[0]["applied"], answers[0]["refused"]) == (0, 1), answers[0]
    assert (answers[1]["applied"], answers[1]["refused"]) == (1, 0), answers[1]
    status, _ = await _call(session, "GET", f"{hub.url}/v1/memories/{payloads[0][0]}", HOSTILE)
    assert status == 404
    status, taken = await _call(session, "GET", f"{hub.url}/v1/memories/{payloads[1][0]}", HOSTILE)
    assert status == 200 and len(taken["metadata"]) == 1_500
