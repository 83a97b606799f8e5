"""No amplification, against real `crdtmem serve` processes: what one token sends is charged by the
deltas and bytes it carries, not by the request, and what it leaves waiting is bounded, also
across restarts."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from crdtmem import Replica
from crdtmem.engine import payload as wire
from tests.support.processes import ServerProcess

MALLORY = "mallory-device-token-001"
BOB = "bob-device-token-0000001"
OPERATOR = "operator-token-000000001"
SEEDER = "seeder-replica-token-0001"
U1, U2 = "user:u1:memories", "user:u2:memories"


def _tokens(tmp: Path) -> Path:
    path = tmp / "tokens.json"
    entries = [
        {
            "token": MALLORY,
            "principal": "user:mallory",
            "read": [U1],
            "write": [U1],
            "origins": ["mallory-phone"],
        },
        {"token": BOB, "principal": "user:bob", "read": [U2], "write": [U2], "origins": ["bob-phone"]},
        {"token": OPERATOR, "principal": "user:ops", "read": ["*"], "write": []},
        {"token": SEEDER, "principal": "replica:seeder", "read": [U1], "write": [U1]},
    ]
    path.write_text(json.dumps({"tokens": entries}))
    return path


async def _orphans(origin: str, user: str, count: int, page: int) -> list[bytes]:
    """Payloads of ``count`` updates of a memory whose creation they leave out: every one of them
    waits for a dependency that never comes."""
    channel = f"user:{user}:memories"
    async with Replica(None, replica_id=origin) as source:
        memory = await source.add("the creation, never sent", user_id=user)
        for i in range(count):
            await source.update(memory.id, metadata={"n": i})
        deltas = [d for d in source.store.deltas_since([channel], {}) if d.doc_id == memory.id][1:]
        keys = source.keys_for(deltas)
    return [wire.encode(wire.Payload(origin, deltas[i : i + page], {}, keys)) for i in range(0, count, page)]


async def _push(
    session: aiohttp.ClientSession, url: str, token: str, data: bytes
) -> tuple[int, Any, str | None]:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.post(f"{url}/v1/sync/push", data=data, headers=headers) as response:
        return response.status, await response.json(), response.headers.get("Retry-After")


async def _status(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/v1/status", headers={"Authorization": f"Bearer {OPERATOR}"}) as r:
        assert r.status == 200
        body: dict[str, Any] = await r.json()
        return body


async def test_a_pending_flood_is_charged_by_deltas_and_bounded_across_restarts(procs, session, tmp_path):
    """Pages of deltas that can never apply: the delta rate refuses the flood after a few pages
    (429 with Retry-After, whatever the request count), what waits stays within the sender's bound
    (the rest evicted and counted), another token pushes meanwhile, and a restart with a smaller
    bound keeps only that many."""
    tokens = _tokens(tmp_path)
    limits = ["--delta-rate", "100", "--limit", "pending_per_sender=300"]
    hub = ServerProcess(tmp_path, "hub", tokens=tokens, extra=limits)
    procs.append(hub.start())
    pages = await _orphans("mallory-phone", "u1", 1_200, 200)  # 6 pages; the burst is 500 deltas
    answers = [await _push(session, hub.url, MALLORY, page) for page in pages]
    statuses = [status for status, _, _ in answers]
    assert statuses[:3] == [200, 200, 200] and 429 in statuses, statuses
    limited = next(a for a in answers if a[0] == 429)
    assert limited[1]["error"] == "RateLimited" and "deltas" in limited[1]["message"]
    assert limited[2] is not None and int(limited[2]) >= 1
    accepted = 200 * statuses.count(200)  # deltas in the pages taken
    status = await _status(session, hub.url)
    assert status["pending_deltas"] == 300, status["trust"]
    assert status["trust"]["pending_evicted"] == accepted - 300

    # another token has a bucket and a bound of its own
    (bobs,) = await _orphans("bob-phone", "u2", 10, 10)
    code, result, _ = await _push(session, hub.url, BOB, bobs)
    assert code == 200 and result["pending"] == 10
    assert (await _status(session, hub.url))["pending_deltas"] == 310

    hub.stop()
    hub.extra = ["--limit", "pending_per_sender=50"]
    hub.start()
    status = await _status(session, hub.url)
    assert status["pending_deltas"] == 50 + 10, status["trust"]  # mallory's 300 cut to 50, bob's 10 kept
    assert status["trust"]["pending_evicted"] == 250


async def test_bytes_are_charged_too(procs, session, tmp_path):
    """One big push is admitted, and it puts its token in debt: the next waits (429), however few
    requests it sent."""
    hub = ServerProcess(tmp_path, "hub", tokens=_tokens(tmp_path), extra=["--byte-rate", "20000"])
    procs.append(hub.start())
    (big,) = await _orphans("mallory-phone", "u1", 1_000, 1_000)
    assert len(big) > 5 * 20_000 * 2  # more than twice the burst (5 s of the rate)
    first = await _push(session, hub.url, MALLORY, big)
    second = await _push(session, hub.url, MALLORY, big)
    assert first[0] == 200 and second[0] == 429 and "bytes" in second[1]["message"], (first[:2], second[:2])
    (small,) = await _orphans("bob-phone", "u2", 2, 2)
    assert (await _push(session, hub.url, BOB, small))[0] == 200


async def _seed(session: aiohttp.ClientSession, url: str, count: int) -> None:
    """``count`` memories of user u1 on the node, pushed by a replica in pages."""
    async with Replica(None, replica_id="seeder") as seeder:
        for i in range(count):
            await seeder.add(f"memory {i}", user_id="u1", metadata={"i": i})
        deltas = seeder.store.deltas_since([U1], {})
        keys = seeder.keys_for(deltas)
    for start in range(0, len(deltas), 500):
        page = wire.encode(wire.Payload("seeder", deltas[start : start + 500], {}, keys))
        status, body, _ = await _push(session, url, SEEDER, page)
        assert status == 200 and body["applied"] == len(deltas[start : start + 500]), body


async def _read_events(response: aiohttp.ClientResponse, count: int) -> list[tuple[str, Any]]:
    """The next ``count`` SSE messages as (event, data), comments skipped."""
    found: list[tuple[str, Any]] = []
    event, data = "", ""
    while len(found) < count:
        line = (await asyncio.wait_for(response.content.readline(), 20)).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif not line and event:
            found.append((event, json.loads(data)))
            event, data = "", ""
    return found


async def test_twenty_feed_clients_with_an_unknown_last_event_id_get_a_reset_and_the_state_in_order(
    procs, session, tmp_path
):
    """The review's replay storm: twenty streams resume from an event id of another replica. Each
    gets a ``reset`` event and then every memory once, in version order, read in pages of 50; a
    bystander is served while all twenty are open and none of them reads."""
    hub = ServerProcess(tmp_path, "hub", tokens=_tokens(tmp_path), extra=["--limit", "feed_page=50"])
    procs.append(hub.start())
    await _seed(session, hub.url, 600)
    headers = {"Authorization": f"Bearer {MALLORY}", "Last-Event-ID": "some-other-replica:4242"}
    streams = [await session.get(f"{hub.url}/v1/events", headers=headers) for _ in range(20)]
    try:
        for response in streams:
            assert response.status == 200
            ((kind, reset),) = await _read_events(response, 1)
            assert kind == "reset" and reset["last_event_id"] == "some-other-replica:4242", reset
        # twenty streams open, none read: others are served meanwhile
        for _ in range(20):
            async with session.get(f"{hub.url}/v1/status", headers={"Authorization": f"Bearer {BOB}"}) as r:
                assert r.status == 200
        for response in streams:
            replayed = await _read_events(response, 600)
            assert {kind for kind, _ in replayed} == {"create"}
            versions = [data["memory"]["version"] for _, data in replayed]
            assert versions == sorted(versions) and len({d["memory"]["id"] for _, d in replayed}) == 600
    finally:
        for response in streams:
            response.close()
