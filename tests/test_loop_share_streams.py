"""The loop share against a real ``crdtmem serve`` process: what a token pushes over the replication
WebSocket costs the event loop what the same push over HTTP costs, and is charged to it alike; a
frame of a token in debt is refused with ``retry_after`` as its push would be."""

from __future__ import annotations

import json
from pathlib import Path

from crdtmem import Replica
from crdtmem.sync.protocol import decode_frame, encode_frame
from tests.support.processes import ServerProcess

MALLORY = "mallory-replica-token-01"
BOB = "bob-device-token-0000001"
TA, U2 = "tenant:acme:shared", "user:u2:memories"


def _tokens(tmp: Path) -> Path:
    path = tmp / "tokens.json"
    entries = [
        {"token": MALLORY, "principal": "replica:mallory", "read": [TA], "write": [TA], "origins": ["*"]},
        {"token": BOB, "principal": "user:bob", "read": [U2], "write": [U2]},
    ]
    path.write_text(json.dumps({"tokens": entries}))
    return path


async def _heavy_payload(maker: str) -> bytes:
    """Three memories of 1,000 metadata keys and 1,000 tags each: tens of ms to apply."""
    async with Replica(None, replica_id=maker) as replica:
        for n in range(3):
            metadata, tags = {f"k{i}": i for i in range(1_000)}, [f"t{n}-{i}" for i in range(1_000)]
            await replica.add("x", tenant_id="acme", shared=True, metadata=metadata, tags=tags)
        return await replica.export_since(TA)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_frames_pushed_over_the_websocket_are_charged_to_the_token(procs, session, tmp_path):
    hub = ServerProcess(tmp_path, "hub", tokens=_tokens(tmp_path), extra=["--loop-share", "0.0001"])
    procs.append(hub.start())
    payloads = [await _heavy_payload(f"maker{n}") for n in range(2)]
    body = json.dumps({"content": "y", "user_id": "u2"}).encode()
    async with session.ws_connect(f"{hub.url}/v1/sync/ws", headers=_auth(MALLORY)) as ws:
        hello = encode_frame(
            "hello", replica="mallory", channels=[TA], mode="eager", interval_ms=0, vectors={}
        )
        await ws.send_bytes(hello)
        assert decode_frame((await ws.receive(timeout=30)).data).type == "hello"
        for n, payload in enumerate(payloads):
            async with session.post(f"{hub.url}/v1/memories", data=body, headers=_auth(BOB)) as r:
                assert r.status == 201  # bob is being served: mallory's loop time is taken from him
            await ws.send_bytes(encode_frame("deltas", n=n, payload=payload))
            reply = decode_frame((await ws.receive(timeout=30)).data)
            while reply.type not in ("ack", "error"):
                reply = decode_frame((await ws.receive(timeout=30)).data)
            if reply.type == "error":  # in debt: refused like a push over HTTP, told when to retry
                assert reply.body["code"] == "RateLimited" and reply.body["retry_after"] > 0, reply.body
                break
            assert "rejected" not in reply.body and reply.body["vectors"][TA][f"maker{n}"] == 3, reply.body
    async with session.post(f"{hub.url}/v1/memories", data=body, headers=_auth(BOB)) as r:
        assert r.status == 201
    async with session.get(f"{hub.url}/v1/memories", headers=_auth(MALLORY)) as r:
        # the same two payloads pushed over HTTP put mallory in debt for seconds (429 here)
        assert r.status == 429, f"{r.status}: six 1,000-key memories applied from frames cost mallory nothing"


async def test_the_same_push_over_http_is_charged_to_the_token(procs, session, tmp_path):
    """The control for the test above: the same two payloads pushed over HTTP put mallory in debt."""
    hub = ServerProcess(tmp_path, "hub", tokens=_tokens(tmp_path), extra=["--loop-share", "0.0001"])
    procs.append(hub.start())
    payloads = [await _heavy_payload(f"maker{n}") for n in range(2)]
    body = json.dumps({"content": "y", "user_id": "u2"}).encode()
    for payload in payloads:
        async with session.post(f"{hub.url}/v1/memories", data=body, headers=_auth(BOB)) as r:
            assert r.status == 201
        async with session.post(f"{hub.url}/v1/sync/push", data=payload, headers=_auth(MALLORY)) as r:
            if r.status == 429:
                break
            assert r.status == 200 and (await r.json())["applied"] == 3
    async with session.post(f"{hub.url}/v1/memories", data=body, headers=_auth(BOB)) as r:
        assert r.status == 201
    async with session.get(f"{hub.url}/v1/memories", headers=_auth(MALLORY)) as r:
        assert r.status == 429
