"""Request bodies are charged to their token's byte rate (``crdtmem/server/app.py``), against real
``crdtmem serve`` processes: a token that floods a node with large bodies, accepted or refused, gets
``429`` with ``Retry-After`` and ``retry_after`` while another token is served; refusals that need
no body are given before it is read."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from crdtmem.engine.replica import Replica
from crdtmem.sync.peer import PeerClient
from tests.support.processes import ServerProcess

MALLORY = "mallory-device-token-001"
BOB = "bob-device-token-0000001"
READER = "u1-reading-device-token-1"
U1, U2 = "user:u1:memories", "user:u2:memories"
BYTE_RATE = 2_000
"""Bytes a second per token in these tests (bursts of 5 s: 10,000 bytes): a body of 30 KB puts its
token 20 KB in debt, ten seconds to pay off, far longer than these tests take between requests."""


def _tokens(tmp: Path) -> Path:
    path = tmp / "tokens.json"
    entries = [
        {"token": MALLORY, "principal": "user:mallory", "read": [U1], "write": [U1]},
        {"token": BOB, "principal": "user:bob", "read": [U2], "write": [U2]},
        {"token": READER, "principal": "user:reader", "read": [U1], "write": []},
    ]
    path.write_text(json.dumps({"tokens": entries}))
    return path


def _hub(tmp: Path, *extra: str) -> ServerProcess:
    return ServerProcess(tmp, "hub", tokens=_tokens(tmp), extra=["--byte-rate", str(BYTE_RATE), *extra])


async def _post(
    session: aiohttp.ClientSession, url: str, token: str, body: bytes
) -> tuple[int, dict[str, Any], str | None]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with session.post(f"{url}/v1/memories", data=body, headers=headers) as response:
        return response.status, await response.json(), response.headers.get("Retry-After")


async def _count(session: aiohttp.ClientSession, url: str, token: str, user: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.get(f"{url}/v1/memories", params={"user_id": user}, headers=headers) as response:
        assert response.status == 200
        total: int = (await response.json())["total"]
        return total


async def test_a_byte_flood_of_accepted_writes_is_429_with_retry_after_while_another_token_is_served(
    procs, session, tmp_path
):
    hub = _hub(tmp_path)
    procs.append(hub.start())
    body = json.dumps({"content": "x" * 30_000, "user_id": "u1"}).encode()
    answers = []
    for _ in range(4):  # four requests: far under the write rate (200/s), far over the byte rate
        answers.append(await _post(session, hub.url, MALLORY, body))
        bob = await _post(session, hub.url, BOB, json.dumps({"content": "mine", "user_id": "u2"}).encode())
        assert bob[0] == 201, bob  # the other token is served throughout
    assert [status for status, _, _ in answers] == [201, 429, 429, 429], answers
    _, error, retry_after = answers[1]
    assert error["error"] == "RateLimited" and "bytes" in error["message"], error
    assert error["retry_after"] > 5 and int(retry_after or 0) >= 5, (error, retry_after)
    assert await _count(session, hub.url, MALLORY, "u1") == 1  # a 429 wrote nothing
    assert await _count(session, hub.url, BOB, "u2") == 4


async def test_refused_bodies_are_charged_too(procs, session, tmp_path):
    """A body refused after it was decoded (too many metadata keys) costs its bytes like an accepted
    one: a token cannot decode-flood the node with requests it knows will be refused."""
    hub = _hub(tmp_path)
    procs.append(hub.start())
    body = json.dumps({"content": "x", "user_id": "u1", "metadata": {f"k{i:05}": i for i in range(2_000)}})
    assert 10_000 < len(body) < 100_000
    statuses = [(await _post(session, hub.url, MALLORY, body.encode()))[0] for _ in range(3)]
    assert statuses == [413, 429, 429], statuses


async def test_a_token_in_debt_is_refused_before_its_body_is_sent(procs, session, tmp_path):
    """Once in debt, a request is answered 429 from its headers: the node does not wait for a body
    it would refuse (here the client never sends one)."""
    hub = _hub(tmp_path)
    procs.append(hub.start())
    first = await _post(
        session, hub.url, MALLORY, json.dumps({"content": "x" * 30_000, "user_id": "u1"}).encode()
    )
    assert first[0] == 201
    status, head = await _headers_only(hub.url, MALLORY, content_length=50_000)
    assert status == 429 and b"retry-after" in head.lower(), head
    status, _ = await _headers_only(hub.url, BOB, content_length=0)
    assert status == 400  # another token's request reaches its handler (an empty body is a 400)


async def test_a_declared_body_over_the_limit_is_413_before_it_is_sent(procs, session, tmp_path):
    """A ``Content-Length`` over ``body_bytes`` is refused from the headers: nothing of the body is
    read or held (before, the node buffered up to the limit and waited for it). What the client
    still sends is discarded as it arrives, and charged as far as the limit."""
    hub = _hub(tmp_path, "--limit", "body_bytes=50000")
    procs.append(hub.start())
    status, head = await _headers_only(hub.url, MALLORY, content_length=60_000)
    assert status == 413 and b'"body_bytes"' in head, head
    small = json.dumps({"content": "x" * 1_000, "user_id": "u1"}).encode()
    assert (await _post(session, hub.url, MALLORY, small))[0] == 429
    small = json.dumps({"content": "x" * 1_000, "user_id": "u2"}).encode()
    assert (await _post(session, hub.url, BOB, small))[0] == 201


async def _headers_only(url: str, token: str, content_length: int) -> tuple[int, bytes]:
    """POST /v1/memories with a ``Content-Length`` and no body bytes: the status and the answer as
    far as it came (the node must answer without the body; a wait for it fails here after 20 s)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            (
                f"POST /v1/memories HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        length = int(
            next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")).split(
                b":"
            )[1]
        )
        head += await asyncio.wait_for(reader.readexactly(length), 20)
        return int(head.split(b" ", 2)[1]), head
    finally:
        writer.close()


async def test_a_peer_waits_out_429_on_its_pulls_and_catches_up(procs, session, tmp_path):
    """A peer's pulls are request bodies like any other, charged to its token's byte rate; answered
    ``429``, the peer waits for ``retry_after`` and asks again, page after page, instead of taking
    the answer for a refusal and dropping to its reconnect backoff."""
    procs.append(hub := _hub(tmp_path, "--byte-rate", "100").start())  # bursts of 500 bytes
    for i in range(12):
        body = json.dumps({"content": f"fact {i}", "user_id": "u1"}).encode()
        assert (await _post(session, hub.url, MALLORY, body))[0] == 201
    async with Replica(tmp_path / "device.db", replica_id="device", channels=[U1]) as device:
        peer = PeerClient(device, hub.url, channels=[U1], token=READER, page=1)  # a pull a memory
        await peer.start()
        try:
            await asyncio.wait_for(peer.synced.wait(), 60)
        finally:
            await peer.stop()
        assert len(await device.list(user_id="u1")) == 12
        assert peer.metrics.total("crdtmem_peer_waits_total") > 0, "no pull was answered 429"
        assert peer.metrics.total("crdtmem_peer_errors_total") == 0, peer.state.last_error
        assert peer.state.attempts == 1
